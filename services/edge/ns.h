/* ns.h - topic namespaces: each topic prefix's policy, from a small JSON file (EDGE_TOPICS).
 *
 *   {"namespaces": [
 *     {"prefix": "orders", "subscribe": "hook", "publish": "nobody", "history": true},
 *     {"prefix": "chat", "publish": "hook", "hook_failure": "allow"}
 *   ]}
 *
 * subscribe: "claim" (the token's sub_topics patterns decide; the default) or "hook" (the
 * back end decides, over hooks.subscribe; the claim is not consulted). publish: "claim" (the
 * default), "hook" (hooks.publish may refuse or rewrite the data) or "nobody". history:
 * replay with since allowed (default true). occupancy: occupancy.<topic> events for its
 * topics (default true). hook_failure: what a hook that does not answer (timeout, nobody
 * serving it, a bad answer) means: "deny" (the default) or "allow". history_s: how far back
 * a replay reaches (seconds; a since whose next event is older gets history_gone, as if the
 * stream had dropped it; default 0: as far as the stream keeps). hook_ttl_s: how long an
 * allowed subscribe is remembered for the same user and topic when the hook gives no ttl_s
 * (default 60; 0: never remembered, whatever the hook says). latest: a subscribe without since
 * gets the topic's last retained event first, then live (default false; needs history, and
 * history_s does not apply: the last value is handed over whatever its age). rpc: who may
 * call the rpc methods named under the prefix: "claim" (the token's rpc_methods, or what
 * hooks.connect granted; the default) or "anyone" (every authenticated connection). A topic's
 * namespace is the longest prefix it equals or starts with followed by a dot; a topic in none gets
 * the defaults, which are today's behaviour without a file. Pure: parsing and lookup. Prefix ns_.
 */
#ifndef EDGE_NS_H
#define EDGE_NS_H

#include <stdbool.h>
#include <stddef.h>

#include "proto/topic.h"

enum ns_rule { NS_CLAIM, NS_HOOK, NS_NOBODY };

typedef struct ns_policy {
    char prefix[TOPIC_MAX + 1]; /* "" for the defaults */
    enum ns_rule subscribe, publish;
    bool history, occupancy, fail_open, latest, rpc_anyone;
    int hook_ttl_s;
    int history_s; /* replay reaches back this far at most (0: as far as the stream keeps) */
} ns_policy;

#define NS_MAX 256 /* namespaces in one file */

typedef struct ns_table {
    ns_policy *v;
    size_t n;
    ns_policy dflt;
} ns_table;

/* The defaults alone (no file). */
void ns_init(ns_table *t);
/* Parses the file's text into t (ns_init first). 0, or -1 with why in err (the entry and the
 * member named); t is then left with the defaults. */
int ns_parse(ns_table *t, const char *text, size_t len, char *err, size_t errlen);
/* The policy of topic (never NULL). */
const ns_policy *ns_find(const ns_table *t, const char *topic);
/* True when some namespace asks a hook (subscribe or publish). */
bool ns_any_hook(const ns_table *t);
void ns_free(ns_table *t);

#endif
