// Texts of the staff UI: Indonesian (the default, in the wording staff know) and English.
const TEXTS = {
  id: {
    app_title: "Antrean Ruangan",
    tab_room: "Antrean",
    tab_admin: "Sinkronisasi BPJS",
    room_label: "Ruangan",
    all_rooms: "Semua ruangan",
    lang_label: "Bahasa",
    empty: "Tidak ada antrean yang menunggu.",
    room_heading: "Antrean menunggu: {room}",
    cancel_button: "Batalkan",
    cancel_aria: "Batalkan antrean nomor tiket {ticket}",
    confirm_title: "Apakah anda yakin membatalkan antrean nomor tiket #{ticket}?",
    verify_hint: "Pastikan identitas pasien sudah diperiksa sebelum membatalkan. Pembatalan tidak dapat dikembalikan.",
    reason_legend: "Alasan pembatalan",
    reason_no_show: "Tidak hadir",
    reason_re_registration: "Daftar ulang",
    reason_data_error: "Kesalahan data",
    reason_other: "Lainnya",
    reason_text: "Keterangan",
    yes: "Ya",
    no: "Tidak",
    progress: "Sedang membatalkan antrean, harap tunggu...",
    success: "Antrean berhasil dibatalkan",
    failure: "Tidak dapat membatalkan antrean",
    connection_lost: "Koneksi terputus. Silakan coba lagi; mencoba lagi aman.",
    bpjs_warning: "Pembatalan berhasil, namun terjadi masalah sinkronisasi dengan BPJS. Silakan hubungi administrator jika diperlukan.",
    bpjs_recovered: "Pembatalan tiket #{ticket} kini sudah tercatat di BPJS.",
    ticket_ref: "Tiket #{ticket}",
    dismiss: "Tutup",
    conn_connecting: "Menghubungkan...",
    conn_live: "Terhubung",
    conn_offline: "Terputus, mencoba lagi...",
    conn_denied: "Sesi berakhir",
    no_token: "Tidak ada token. Buka tautan staf yang dicetak oleh `make up` (…/#token=...).",
    session_invalid: "Sesi tidak valid, silakan masuk kembali",
    load_failed: "Daftar antrean tidak dapat dimuat",
    payer_BPJS: "BPJS", payer_UMUM: "Umum", payer_ASURANSI: "Asuransi",
    admin_title: "Pembatalan yang belum tersinkron ke BPJS",
    admin_filter: "Status",
    admin_empty: "Tidak ada data.",
    refresh: "Muat ulang",
    st_unsynced: "Belum tersinkron", st_failed: "Gagal", st_pending: "Menunggu",
    st_synced: "Tersinkron", st_resolved_manually: "Diselesaikan manual",
    col_ticket: "Tiket", col_patient: "Pasien", col_reason: "Alasan", col_attempts: "Percobaan",
    col_error: "Galat BPJS terakhir", col_next: "Percobaan berikutnya", col_status: "Status",
    col_actions: "Tindakan",
    retry: "Coba lagi",
    resolve: "Selesaikan",
    resolve_title: "Selesaikan manual tiket #{ticket}",
    resolve_note: "Catatan penyelesaian (wajib)",
    resolve_save: "Tandai selesai",
    close: "Tutup",
    retry_done: "Sinkronisasi BPJS dijadwalkan ulang",
    resolve_done: "Sinkronisasi BPJS ditandai selesai manual",
    action_failed: "Tindakan gagal",
    no_retry: "tidak dicoba lagi",
  },
  en: {
    app_title: "Room queue",
    tab_room: "Queue",
    tab_admin: "BPJS sync",
    room_label: "Room",
    all_rooms: "All rooms",
    lang_label: "Language",
    empty: "No tickets are waiting.",
    room_heading: "Waiting tickets: {room}",
    cancel_button: "Cancel",
    cancel_aria: "Cancel queue ticket {ticket}",
    confirm_title: "Are you sure you want to cancel queue ticket #{ticket}?",
    verify_hint: "Check the patient's identity before cancelling. A cancellation cannot be undone.",
    reason_legend: "Reason",
    reason_no_show: "Did not come",
    reason_re_registration: "Registers again",
    reason_data_error: "Wrong data",
    reason_other: "Other",
    reason_text: "Details",
    yes: "Yes",
    no: "No",
    progress: "Cancelling the ticket, please wait...",
    success: "Ticket cancelled",
    failure: "The ticket could not be cancelled",
    connection_lost: "Connection lost. Please try again; trying again is safe.",
    bpjs_warning: "Cancelled, but synchronising with BPJS failed. Please contact an administrator if needed.",
    bpjs_recovered: "The cancellation of ticket #{ticket} has now reached BPJS.",
    ticket_ref: "Ticket #{ticket}",
    dismiss: "Dismiss",
    conn_connecting: "Connecting...",
    conn_live: "Live",
    conn_offline: "Disconnected, retrying...",
    conn_denied: "Session ended",
    no_token: "No token. Open a staff link printed by `make up` (…/#token=...).",
    session_invalid: "Session not valid, please sign in again",
    load_failed: "The queue could not be loaded",
    payer_BPJS: "BPJS", payer_UMUM: "General", payer_ASURANSI: "Insurance",
    admin_title: "Cancellations not yet synchronised to BPJS",
    admin_filter: "Status",
    admin_empty: "Nothing here.",
    refresh: "Refresh",
    st_unsynced: "Not synchronised", st_failed: "Failed", st_pending: "Pending",
    st_synced: "Synchronised", st_resolved_manually: "Resolved by hand",
    col_ticket: "Ticket", col_patient: "Patient", col_reason: "Reason", col_attempts: "Attempts",
    col_error: "Last BPJS error", col_next: "Next attempt", col_status: "Status",
    col_actions: "Actions",
    retry: "Retry",
    resolve: "Resolve",
    resolve_title: "Resolve ticket #{ticket} by hand",
    resolve_note: "Resolution note (required)",
    resolve_save: "Mark resolved",
    close: "Close",
    retry_done: "BPJS sync scheduled again",
    resolve_done: "BPJS sync marked as resolved by hand",
    action_failed: "Action failed",
    no_retry: "no more retries",
  },
};

let lang = localStorage.getItem("antrean.lang") === "en" ? "en" : "id";

export function getLang() {
  return lang;
}

export function setLang(value) {
  lang = value === "en" ? "en" : "id";
  localStorage.setItem("antrean.lang", lang);
  document.documentElement.lang = lang;
  applyStatic();
}

export function t(key, vars = {}) {
  const text = TEXTS[lang][key] ?? TEXTS.id[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

export function applyStatic(root = document) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
}
