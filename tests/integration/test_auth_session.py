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
    """Refreshed every half second (the pace only keeps it busy; nothing waits for a time)
    until auth refuses: every token handed out meanwhile has its TTL cut to the session's
    end, the refusal does not come before MAX_S after the login began (a lower bound), and
    it does come (a refresh that extended the session would be answered for ever)."""
    t_login = time.monotonic()  # before the login: the session cannot end before + MAX_S
    r = _grant(st, grant_type="password", username="alice", password="wonderland")
    assert r.status == 200, r
    t0 = time.monotonic()  # after it: the session's end is before t0 + MAX_S
    rt = r.json()["refresh_token"]
    refreshes = 0
    while True:
        assert time.monotonic() - t0 < 6 * MAX_S, "still refreshed long after its end"
        t_ask = time.monotonic()
        r = _grant(st, grant_type="refresh_token", refresh_token=rt)
        if r.status != 200:
            break
        rt = r.json()["refresh_token"]
        refreshes += 1
        ttl, left = _ttl(st, rt), MAX_S - (time.monotonic() - t0)
        assert ttl == -2 or ttl <= left + 1, (ttl, left)  # not REFRESH_TOKEN_TTL
        time.sleep(0.5)  # the pace of the refreshes (load): nothing waits on it
    end = r
    assert end.status == 400 and end.json()["error"] == "invalid_grant", end
    assert refreshes >= 1, "the first refresh, right after the login, was refused"
    assert time.monotonic() - t_login >= MAX_S - 1, "refused before the session's end"
    # the token expired with its family (its TTL was cut to the end)
    harness.wait_for(lambda: _ttl(st, rt) == -2, what="the last token gone with its session")
    # a new login starts a new session
    r = _grant(st, grant_type="password", username="alice", password="wonderland")
    assert r.status == 200, r
    r = _grant(st, grant_type="refresh_token", refresh_token=r.json()["refresh_token"])
    assert r.status == 200, r
    print("  %d refreshes, each token's TTL cut to the session's end; then: %s"
          % (refreshes, end.json()["error_description"]))


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
