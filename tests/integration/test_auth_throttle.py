"""Failed-login throttling in auth, through the gateway: after AUTH_LOGIN_MAX_FAILURES failed
password or client-secret checks of one name within AUTH_LOGIN_WINDOW_S, that name gets
429 slow_down (without a hash check) until the window ends; other names are not affected;
unknown names are throttled like known ones (no enumeration); a success clears the count."""
import hashlib

import harness

SERVICES = ("auth", "gateway")
ENV = {"auth": {"AUTH_LOGIN_MAX_FAILURES": "3", "AUTH_LOGIN_WINDOW_S": "3"}}


def login(st, user, password):
    body, hdrs = harness.form(grant_type="password", username=user, password=password)
    return st.gw("POST", "/auth/token", body=body, headers=hdrs)


def client(st, cid, secret):
    body, hdrs = harness.form(grant_type="client_credentials", client_id=cid,
                              client_secret=secret)
    return st.gw("POST", "/auth/token", body=body, headers=hdrs)


def test_password_guessing_is_throttled_per_name(st):
    for _ in range(3):
        r = login(st, "alice", "guess")
        assert r.status == 400 and r.json()["error"] == "invalid_grant", r
    r = login(st, "alice", "wonderland")  # even the right password waits out the window
    assert r.status == 429 and r.json()["error"] == "slow_down", r
    print("  4th attempt:", r.json()["error_description"])
    assert "retry in" in r.json()["error_description"]
    r = login(st, "bob", "builder")  # another name is not affected
    assert r.status == 200, r
    for _ in range(3):
        assert login(st, "mallory", "guess").status == 400  # unknown: same answers
    assert login(st, "mallory", "guess").status == 429
    harness.wait_for(lambda: login(st, "alice", "wonderland").status == 200, timeout=8,
                     what="alice allowed again after the window")


def _fail_key(name):
    """auth's Redis key counting a user name's failures (its SHA-256, first 16 bytes)."""
    return "sc:loginfail:u:" + hashlib.sha256(name.encode()).hexdigest()[:32]


def test_success_clears_the_count(st):
    assert st.redis_cmd("EXISTS", _fail_key("bob")).strip() == "0"  # bob starts at none
    for _ in range(2):
        assert login(st, "bob", "guess").status == 400
    assert st.redis_cmd("EXISTS", _fail_key("bob")).strip() == "1"  # counted
    assert login(st, "bob", "builder").status == 200
    assert st.redis_cmd("EXISTS", _fail_key("bob")).strip() == "0"  # and cleared
    for _ in range(2):
        assert login(st, "bob", "guess").status == 400  # not 429: the count restarted
    assert login(st, "bob", "builder").status == 200


def test_client_secret_guessing_is_throttled(st):
    secret = st.read_secret("producer.secret")
    for _ in range(3):
        r = client(st, "producer", "wrong")
        assert r.status == 401 and r.json()["error"] == "invalid_client", r
    r = client(st, "producer", secret)
    assert r.status == 429 and r.json()["error"] == "slow_down", r
    harness.wait_for(lambda: client(st, "producer", secret).status == 200, timeout=8,
                     what="producer allowed again after the window")
