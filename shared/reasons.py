"""Indonesian reason texts sent to BPJS (`keterangan` / `alasan`) for each reason code."""

REASON_TEXT_ID = {
    "no_show": "Pasien tidak hadir",
    "re_registration": "Pasien mendaftar ulang",
    "data_error": "Kesalahan data pendaftaran",
    "other": "Dibatalkan oleh petugas",
}


def bpjs_reason(reason_code: str | None, reason_text: str | None) -> str:
    """The staff's free text when given, else the Indonesian text of the code."""
    if reason_text and reason_text.strip():
        return reason_text.strip()[:200]
    return REASON_TEXT_ID.get(reason_code or "other", REASON_TEXT_ID["other"])
