/* topic.h - sidecast.v1 topic names and the patterns that grant them (DESIGN.md).
 *
 * A topic is 1..128 bytes of [A-Za-z0-9_-] tokens separated by single dots. A pattern
 * (a token's sub/pub claim, a namespace) may use the NATS wildcards: "*" one token, ">" one
 * or more trailing tokens. Pure functions, no allocation, but for topic_patterns_json.
 * Prefix topic_. */
#ifndef SC_TOPIC_H
#define SC_TOPIC_H

#include <stddef.h>

#include <jansson.h>

#define TOPIC_MAX 128 /* bytes */

/* 1 when topic matches pattern. */
int topic_match(const char *pattern, const char *topic);
/* 1 when topic is a valid concrete topic (no wildcards). */
int topic_valid(const char *topic);
/* The same for topic[0..n) (need not be NUL-terminated). */
int topic_valid_n(const char *topic, size_t n);
/* 1 when p[0..n) is a valid pattern: a topic whose tokens may also be "*", and whose last
 * token may be ">". */
int topic_pattern_valid_n(const char *p, size_t n);
/* A comma-separated list of patterns (a configuration value) as a new JSON array of strings
 * ("": empty), or NULL when one is not a valid pattern. */
json_t *topic_patterns_json(const char *list);

#endif
