/* tmpl.h - request templates of the routing table: JSON values whose strings may hold
 * references "${root.field.0.name}" into a context object.
 *
 * A string that is exactly one reference is replaced by the referenced JSON value, whatever
 * its type; a reference inside a longer string is interpolated (the value must be a string,
 * number or boolean). "$${" stands for a literal "${". Roots and path segments are
 * [A-Za-z0-9_-]+; a numeric segment indexes an array. Pure: no I/O. */
#ifndef GW_TMPL_H
#define GW_TMPL_H

#include <jansson.h>
#include <stddef.h>

#define TMPL_MAX_DEPTH 16    /* nesting of objects/arrays in a template */
#define TMPL_MAX_REF 128     /* bytes between "${" and "}" */
#define TMPL_MAX_SEGMENTS 16 /* root + fields of one reference */
#define TMPL_MAX_STRING 4096 /* bytes of one interpolated string after rendering */

/* Called for each reference while checking: ref[0..len) is the text between "${" and "}",
 * its first rootlen bytes the root. Returns 1 when the reference may be used. */
typedef int (*tmpl_ref_fn)(const char *ref, size_t len, size_t rootlen, void *ud);

/* Checks the syntax of every reference in tmpl and asks ref_ok (may be NULL: any reference)
 * about each. Returns 0, or -1 with a reason in err. */
int tmpl_check(const json_t *tmpl, tmpl_ref_fn ref_ok, void *ud, char *err, size_t errlen);

/* Why a rendering failed: msg for humans; root names the reference's root when a
 * reference was at fault (unresolved, or a value that cannot be interpolated), else "". */
typedef struct tmpl_error {
    char msg[192];
    char root[TMPL_MAX_REF + 1];
} tmpl_error;

/* Renders tmpl against ctx (an object: root name -> value). Returns a new value (caller
 * releases) that shares nothing with tmpl, or NULL with *e filled (e may be NULL). tmpl is
 * only read, so one template may be rendered by several threads at once. */
json_t *tmpl_render(const json_t *tmpl, const json_t *ctx, tmpl_error *e);

#endif
