/* ns.c - topic namespaces; see ns.h. */
#include "ns.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ns_init(ns_table *t)
{
    memset(t, 0, sizeof *t);
    t->dflt.subscribe = NS_CLAIM;
    t->dflt.publish = NS_CLAIM;
    t->dflt.history = true;
    t->dflt.occupancy = true;
    t->dflt.hook_ttl_s = 60;
}

static int rule_of(const json_t *v, bool publish, enum ns_rule *out)
{
    const char *s = json_string_value(v);
    if (!s) return -1;
    if (strcmp(s, "claim") == 0)
        *out = NS_CLAIM;
    else if (strcmp(s, "hook") == 0)
        *out = NS_HOOK;
    else if (publish && strcmp(s, "nobody") == 0)
        *out = NS_NOBODY;
    else
        return -1;
    return 0;
}

/* One entry into p; -1 with why (the member) in err. */
static int entry_of(const json_t *e, const ns_policy *dflt, ns_policy *p, char *err, size_t errlen)
{
    static const char *const known[] = {"prefix",    "subscribe", "publish",      "history",
                                        "history_s", "occupancy", "hook_failure", "hook_ttl_s",
                                        "latest",    "rpc"};
    *p = *dflt;
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)e, key, v) {
        bool ok = false;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            ok |= strcmp(key, known[i]) == 0;
        if (!ok) {
            snprintf(err, errlen, "unknown member \"%.40s\"", key);
            return -1;
        }
    }
    const char *prefix = json_string_value(json_object_get(e, "prefix"));
    if (!prefix || !topic_valid(prefix)) {
        snprintf(err, errlen, "\"prefix\": a topic (dot-separated [A-Za-z0-9_-] tokens) is needed");
        return -1;
    }
    snprintf(p->prefix, sizeof p->prefix, "%s", prefix);
    if ((v = json_object_get(e, "subscribe")) && rule_of(v, false, &p->subscribe) != 0) {
        snprintf(err, errlen, "\"subscribe\": \"claim\" or \"hook\"");
        return -1;
    }
    if ((v = json_object_get(e, "publish")) && rule_of(v, true, &p->publish) != 0) {
        snprintf(err, errlen, "\"publish\": \"claim\", \"hook\" or \"nobody\"");
        return -1;
    }
    if ((v = json_object_get(e, "history"))) {
        if (!json_is_boolean(v)) {
            snprintf(err, errlen, "\"history\": true or false");
            return -1;
        }
        p->history = json_is_true(v);
    }
    if ((v = json_object_get(e, "history_s"))) {
        json_int_t n = json_integer_value(v);
        if (!json_is_integer(v) || n < 0 || n > 365L * 86400) {
            snprintf(err, errlen, "\"history_s\": 0..31536000 (seconds)");
            return -1;
        }
        p->history_s = (int)n;
    }
    if ((v = json_object_get(e, "occupancy"))) {
        if (!json_is_boolean(v)) {
            snprintf(err, errlen, "\"occupancy\": true or false");
            return -1;
        }
        p->occupancy = json_is_true(v);
    }
    if ((v = json_object_get(e, "hook_failure"))) {
        const char *s = json_string_value(v);
        if (!s || (strcmp(s, "deny") != 0 && strcmp(s, "allow") != 0)) {
            snprintf(err, errlen, "\"hook_failure\": \"deny\" or \"allow\"");
            return -1;
        }
        p->fail_open = strcmp(s, "allow") == 0;
    }
    if ((v = json_object_get(e, "hook_ttl_s"))) {
        json_int_t n = json_integer_value(v);
        if (!json_is_integer(v) || n < 0 || n > 86400) {
            snprintf(err, errlen, "\"hook_ttl_s\": 0..86400");
            return -1;
        }
        p->hook_ttl_s = (int)n;
    }
    if ((v = json_object_get(e, "latest"))) {
        if (!json_is_boolean(v)) {
            snprintf(err, errlen, "\"latest\": true or false");
            return -1;
        }
        p->latest = json_is_true(v);
    }
    if ((v = json_object_get(e, "rpc"))) {
        const char *s = json_string_value(v);
        if (!s || (strcmp(s, "claim") != 0 && strcmp(s, "anyone") != 0)) {
            snprintf(err, errlen, "\"rpc\": \"claim\" or \"anyone\"");
            return -1;
        }
        p->rpc_anyone = strcmp(s, "anyone") == 0;
    }
    if (p->latest && !p->history) { /* the last value is read from the history stream */
        snprintf(err, errlen, "\"latest\": true needs \"history\": true");
        return -1;
    }
    return 0;
}

int ns_parse(ns_table *t, const char *text, size_t len, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je), *list;
    int rc = -1;
    if (!root) {
        snprintf(err, errlen, "not JSON (line %d: %.80s)", je.line, je.text);
        return -1;
    }
    if (!json_is_object(root) || !json_is_array(list = json_object_get(root, "namespaces")) ||
        json_object_size(root) != 1) {
        snprintf(err, errlen, "an object with one member \"namespaces\": [...] is needed");
        goto done;
    }
    size_t n = json_array_size(list);
    if (n > NS_MAX) {
        snprintf(err, errlen, "more than %d namespaces", NS_MAX);
        goto done;
    }
    ns_policy *v = n ? calloc(n, sizeof *v) : NULL;
    if (n && !v) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        char why[200];
        const json_t *e = json_array_get(list, i);
        if (!json_is_object(e) || entry_of(e, &t->dflt, &v[i], why, sizeof why) != 0) {
            snprintf(err, errlen, "namespaces[%zu]: %s", i,
                     json_is_object(e) ? why : "an object is needed");
            free(v);
            goto done;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(v[j].prefix, v[i].prefix) == 0) {
                snprintf(err, errlen, "namespaces[%zu]: prefix \"%s\" given twice", i, v[i].prefix);
                free(v);
                goto done;
            }
        }
    }
    t->v = v;
    t->n = n;
    rc = 0;
done:
    json_decref(root);
    return rc;
}

const ns_policy *ns_find(const ns_table *t, const char *topic)
{
    const ns_policy *best = &t->dflt;
    size_t best_len = 0;
    for (size_t i = 0; i < t->n; i++) {
        size_t pl = strlen(t->v[i].prefix);
        if (pl > best_len && strncmp(topic, t->v[i].prefix, pl) == 0 &&
            (topic[pl] == '\0' || topic[pl] == '.')) {
            best = &t->v[i];
            best_len = pl;
        }
    }
    return best;
}

bool ns_any_hook(const ns_table *t)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->v[i].subscribe == NS_HOOK || t->v[i].publish == NS_HOOK) return true;
    return false;
}

void ns_free(ns_table *t)
{
    free(t->v);
    t->v = NULL;
    t->n = 0;
}
