"""What the OpenAPI document says matches how the API answers (the fuzzer checks it broadly:
tests/e2e/test_openapi_fuzz.py); these pin the points it once got wrong."""

from services.cancel_api.openapi import IDEMPOTENCY_KEY_MAX, MAX_ID
from tests.fixtures.api import auth, token


async def _doc(api) -> dict:
    return (await api.client.get("/openapi.json")).json()


async def test_every_error_answer_is_documented_as_problem_json(api):
    doc = await _doc(api)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            errors = {s: r for s, r in op["responses"].items() if s[0] in "45"}
            assert {"401", "403", "413", "422", "503"} <= errors.keys(), (method, path)
            for status, response in errors.items():
                assert list(response["content"]) == ["application/problem+json"], (path, status)
                ref = response["content"]["application/problem+json"]["schema"]["$ref"]
                schema = doc["components"]["schemas"][ref.rsplit("/", 1)[-1]]
                assert set(schema["required"]) == {"type", "title", "status", "detail", "code"}


async def test_path_ids_are_bounded_integers_and_bodies_required_where_they_are(api):
    doc = await _doc(api)
    for path, item in doc["paths"].items():
        for op in item.values():
            for p in op.get("parameters", []):
                if p["name"] == "queue_id":
                    assert p["schema"]["type"] == "integer", path
                    assert (p["schema"]["minimum"], p["schema"]["maximum"]) == (1, MAX_ID)
    assert doc["paths"]["/antrian_ruangan"]["post"]["requestBody"]["required"] is True
    assert doc["paths"]["/bpjs_sync/{queue_id}/resolve"]["post"]["requestBody"]["required"]
    cancel = doc["paths"]["/antrian_ruangan/batal/{queue_id}"]["post"]
    assert cancel["requestBody"]["required"] is False
    headers = {p["name"]: p for p in cancel["parameters"] if p["in"] == "header"}
    assert headers["Idempotency-Key"]["schema"]["maxLength"] == IDEMPOTENCY_KEY_MAX
    assert headers["X-Request-ID"]["required"] is False


async def test_405_names_every_method_served_on_the_path(api):
    r = await api.client.delete("/antrian_ruangan", headers=auth(token()))
    assert r.status_code == 405 and r.headers["content-type"] == "application/problem+json"
    assert r.headers["allow"] == "GET, POST"


async def test_text_postgresql_cannot_store_is_422_not_a_server_error(api):
    body = {"room_id": "R", "patient": {"mrn": "1", "name": "a\u0000b"}, "payer": "UMUM"}
    r = await api.client.post("/antrian_ruangan", json=body, headers=auth(token()))
    assert r.status_code == 422 and r.json()["code"] == "invalid_request"
    t = await api.register()
    r = await api.cancel(t["id"], json={"reason_text": "x\u0000"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_request"


async def test_an_unsafe_request_id_is_replaced_not_refused(api):
    r = await api.client.get("/antrian_ruangan", headers={**auth(token()), "X-Request-ID": "a b;c"})
    assert r.status_code == 200 and r.headers["x-request-id"] != "a b;c"
