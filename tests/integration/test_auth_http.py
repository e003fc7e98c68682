"""auth behind the gateway: the HTTP face of the token endpoint (RFC 6749 form and JSON
bodies, status codes, Cache-Control / WWW-Authenticate headers), revocation (RFC 7009) and
the JWKS document, with the routing table of deploy/config/routes.json."""
import base64
import json

import harness

SERVICES = ("auth", "gateway")


def post_form(st, path, **fields):
    body, hdrs = harness.form(**fields)
    return st.gw("POST", path, body=body, headers=hdrs)


def claims(jwt):
    p = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


def assert_oauth_error(r, status, code):
    assert r.status == status, r
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    doc = r.json()
    assert doc.get("error") == code and doc.get("error_description"), doc


def test_password_grant_form(st):
    r = post_form(st, "/auth/token", grant_type="password", username="alice",
                  password="wonderland")
    assert r.status == 200, r
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    assert "no-store" in r.headers.get("cache-control", ""), r.headers
    doc = r.json()
    assert doc["token_type"] == "Bearer" and doc["expires_in"] == 300
    assert doc["refresh_token"] and doc["ws_url"]
    assert claims(doc["access_token"])["sub"] == "alice"


def test_password_grant_json(st):
    r = st.gw("POST", "/auth/token", body={"grant_type": "password", "username": "bob",
                                           "password": "builder"})
    assert r.status == 200, r
    assert claims(r.json()["access_token"])["sub_topics"] == ["prices.*"]


def test_errors_over_http(st):
    r = post_form(st, "/auth/token", grant_type="password", username="alice", password="x")
    assert_oauth_error(r, 400, "invalid_grant")
    r = post_form(st, "/auth/token", grant_type="password", username="alice")
    assert_oauth_error(r, 400, "invalid_request")
    r = post_form(st, "/auth/token", grant_type="device_code")
    assert_oauth_error(r, 400, "unsupported_grant_type")
    r = post_form(st, "/auth/token", grant_type="client_credentials", client_id="producer",
                  client_secret="wrong")
    assert_oauth_error(r, 401, "invalid_client")
    assert r.headers.get("www-authenticate", "").startswith("Basic"), r.headers
    # a repeated parameter (RFC 6749 §3.2) is refused
    r = st.gw("POST", "/auth/token", body="grant_type=password&grant_type=password",
              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 400, r


def test_client_credentials_http(st):
    r = post_form(st, "/auth/token", grant_type="client_credentials", client_id="producer",
                  client_secret=st.read_secret("producer.secret"))
    assert r.status == 200, r
    assert "refresh_token" not in r.json()


def test_refresh_and_revoke_http(st):
    d = post_form(st, "/auth/token", grant_type="password", username="alice",
                  password="wonderland").json()
    r = post_form(st, "/auth/token", grant_type="refresh_token",
                  refresh_token=d["refresh_token"])
    assert r.status == 200, r
    new = r.json()["refresh_token"]
    r = post_form(st, "/auth/revoke", token=new, token_type_hint="refresh_token")
    assert r.status == 200 and r.json() == {}, r
    r = post_form(st, "/auth/token", grant_type="refresh_token", refresh_token=new)
    assert_oauth_error(r, 400, "invalid_grant")
    r = post_form(st, "/auth/revoke", token="nonsense")
    assert r.status == 200, r
    # log out everywhere, form-style boolean
    a = post_form(st, "/auth/token", grant_type="password", username="alice",
                  password="wonderland").json()
    b = post_form(st, "/auth/token", grant_type="password", username="alice",
                  password="wonderland").json()
    r = post_form(st, "/auth/revoke", token=a["refresh_token"], everywhere="true")
    assert r.status == 200, r
    r = post_form(st, "/auth/token", grant_type="refresh_token", refresh_token=b["refresh_token"])
    assert_oauth_error(r, 400, "invalid_grant")


def test_jwks_http(st):
    r = st.gw("GET", "/.well-known/jwks.json")
    assert r.status == 200, r
    assert "max-age" in r.headers.get("cache-control", ""), r.headers
    k = r.json()["keys"][0]
    assert k["kid"] == "dev-1" and k["alg"] == "ES256" and "d" not in k
