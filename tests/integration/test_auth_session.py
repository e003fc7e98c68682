"""The absolute session lifetime (REFRESH_MAX_LIFETIME_S): a refresh-token family ends that
long after its login however often it is refreshed, and no refresh token it hands out lives
past that end (its Redis TTL). Set to 4 s here; REFRESH_TOKEN_TTL stays long."""
import base64
import hashlib
import json
import time

import harness

SERVICES = ("auth", "gateway")
MAX_S = 4
ENV = {"auth": {"REFRESH_MAX_LIFETIME_S": str(MAX_S), "REFRESH_TOKEN_TTL": "3600"}}


def _grant(st, **fields):
    body, hdrs = harness.form(**fields)
    return st.gw("POST", "/auth/token", body=body, headers=hdrs)


def _ttl(st, refresh_token):
    key = "sc:rt:" + hashlib.sha256(refresh_token.encode()).hexdigest()
    return int(st.redis_cmd("TTL", key).strip())


def test_a_session_ends_at_its_maximum_lifetime(st):
    r = _grant(st, grant_type="password", username="alice", password="wonderland")
    assert r.status == 200, r
    t0 = time.monotonic()  # the session began before this: its end is before t0 + MAX_S
    rt = r.json()["refresh_token"]
    refreshes = 0
    while time.monotonic() - t0 < MAX_S - 1.5:  # refreshing keeps it going, until the end
        r = _grant(st, grant_type="refresh_token", refresh_token=rt)
        assert r.status == 200, r
        rt = r.json()["refresh_token"]
        refreshes += 1
        left = MAX_S - (time.monotonic() - t0)
        assert 0 < _ttl(st, rt) <= left + 1, (_ttl(st, rt), left)  # not REFRESH_TOKEN_TTL
        time.sleep(0.5)
    assert refreshes >= 2, refreshes
    harness.wait_for(lambda: time.monotonic() - t0 > MAX_S + 1.2, timeout=MAX_S + 5,
                     what="the session's end")
    end = _grant(st, grant_type="refresh_token", refresh_token=rt)
    assert end.status == 400 and end.json()["error"] == "invalid_grant", end
    # the token expired with its family (its TTL was cut to the end)
    assert _ttl(st, rt) == -2, _ttl(st, rt)
    # a new login starts a new session
    r = _grant(st, grant_type="password", username="alice", password="wonderland")
    assert r.status == 200, r
    r = _grant(st, grant_type="refresh_token", refresh_token=r.json()["refresh_token"])
    assert r.status == 200, r
    print("  %d refreshes, each token's TTL cut to the session's end; after %d s: %s"
          % (refreshes, MAX_S, end.json()["error_description"]))


def test_a_session_older_than_the_lifetime_is_ended_at_its_next_refresh(st):
    """A family that outlived the limit (it was lowered after the login) is refused by its
    age, not only by its tokens' TTL."""
    r = _grant(st, grant_type="password", username="bob", password="builder")
    assert r.status == 200, r
    payload = r.json()["access_token"].split(".")[1]
    sid = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sid"]
    st.redis_cmd("HSET", "sc:rtfam:" + sid, "created", str(int(time.time()) - 100))
    r = _grant(st, grant_type="refresh_token", refresh_token=r.json()["refresh_token"])
    assert r.status == 400 and r.json()["error"] == "invalid_grant", r
    assert "maximum lifetime" in r.json()["error_description"], r.json()
    assert st.redis_cmd("HGET", "sc:rtfam:" + sid, "reason").strip() == "expired"
    print("  login 100 s ago, limit %d s: %s" % (MAX_S, r.json()["error_description"]))
