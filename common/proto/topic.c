/* topic.c - topic names and patterns: see topic.h. */
#include "topic.h"

#include <string.h>

static int topic_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

int topic_valid(const char *topic)
{
    return topic != NULL && topic_valid_n(topic, strnlen(topic, TOPIC_MAX + 1));
}

int topic_valid_n(const char *topic, size_t n)
{
    size_t tok = 0;

    if (topic == NULL || n == 0 || n > TOPIC_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        if (topic[i] == '.') {
            if (tok == 0) return 0;
            tok = 0;
        } else if (!topic_char((unsigned char)topic[i])) {
            return 0;
        } else {
            tok++;
        }
    }
    return tok > 0;
}

/* Length of the token starting at s (up to '.' or NUL). */
static size_t topic_token_len(const char *s)
{
    size_t n = 0;
    while (s[n] != '\0' && s[n] != '.') n++;
    return n;
}

int topic_match(const char *pattern, const char *topic)
{
    const char *p = pattern, *t = topic;

    /* A topic never carries wildcards; a pattern longer than a topic can be is no pattern. */
    if (pattern == NULL || !topic_valid(topic) || strnlen(pattern, TOPIC_MAX + 1) > TOPIC_MAX)
        return 0;
    for (;;) {
        size_t pl = topic_token_len(p), tl = topic_token_len(t);

        if (pl == 1 && p[0] == '>') return p[1] == '\0'; /* t still holds at least one token here */
        if (pl == 0) return 0;                           /* empty pattern token */
        if (!(pl == 1 && p[0] == '*')) {
            if (pl != tl || memcmp(p, t, pl) != 0) return 0;
        }
        p += pl;
        t += tl;
        if (*p == '\0' || *t == '\0') return *p == '\0' && *t == '\0';
        p++;
        t++;
    }
}

int topic_pattern_valid_n(const char *p, size_t n)
{
    if (n == 0 || n > TOPIC_MAX) return 0;
    for (size_t i = 0; i < n;) {
        size_t t = 0;
        while (i + t < n && p[i + t] != '.') t++;
        if (t == 0) return 0;
        int wild = t == 1 && (p[i] == '*' || p[i] == '>');
        if (wild && p[i] == '>' && i + 1 != n) return 0;
        for (size_t j = 0; !wild && j < t; j++) {
            char c = p[i + j];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-'))
                return 0;
        }
        i += t + 1;
        if (i == n) return 0; /* a trailing dot */
    }
    return 1;
}

json_t *topic_patterns_json(const char *list)
{
    json_t *a = json_array();
    for (const char *p = list; a && *p;) {
        size_t n = strcspn(p, ",");
        if (!topic_pattern_valid_n(p, n)) {
            json_decref(a);
            return NULL;
        }
        json_array_append_new(a, json_stringn(p, n));
        p += n + (p[n] == ',');
    }
    return a;
}
