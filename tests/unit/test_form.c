/* test_form.c - percent-decoding and x-www-form-urlencoded parsing (common/form.c). */
#include "test.h"

#include "form.h"

static json_t *parse_ok(const char *s, int flags)
{
    json_t *o = NULL;
    char err[128] = "";
    int rc = form_parse(s, strlen(s), flags, 0, &o, err, sizeof err);
    if (rc != SC_OK) printf("  form_parse(%s): %d %s\n", s, rc, err);
    return o;
}

TEST(pct_decode_basic)
{
    char out[64];
    CHECK_EQ_INT(form_pct_decode("a%20b+c", 7, 1, out), 5);
    CHECK_STR(out, "a b c");
    CHECK_EQ_INT(form_pct_decode("a%20b+c", 7, 0, out), 5);
    CHECK_STR(out, "a b+c");
    CHECK_EQ_INT(form_pct_decode("%2F%2f", 6, 0, out), 2);
    CHECK_STR(out, "//");
    CHECK_EQ_INT(form_pct_decode("", 0, 0, out), 0);
    CHECK_STR(out, "");
    CHECK_EQ_INT(form_pct_decode("%C3%A9", 6, 0, out), 2); /* é */
}

TEST(pct_decode_rejects)
{
    char out[64];
    CHECK_EQ_INT(form_pct_decode("%", 1, 0, out), SC_EMALFORMED);
    CHECK_EQ_INT(form_pct_decode("%2", 2, 0, out), SC_EMALFORMED);
    CHECK_EQ_INT(form_pct_decode("ab%g0", 5, 0, out), SC_EMALFORMED);
    CHECK_EQ_INT(form_pct_decode("%00", 3, 0, out), SC_EMALFORMED);
    CHECK_EQ_INT(form_pct_decode("%FF", 3, 0, out), SC_EMALFORMED);       /* not UTF-8 */
    CHECK_EQ_INT(form_pct_decode("%C0%AF", 6, 0, out), SC_EMALFORMED);    /* overlong '/' */
    CHECK_EQ_INT(form_pct_decode("%ED%A0%80", 9, 0, out), SC_EMALFORMED); /* surrogate */
    /* the length bounds the input: a '%' right at the end of the slice is malformed */
    CHECK_EQ_INT(form_pct_decode("a%41", 2, 0, out), SC_EMALFORMED);
}

TEST(utf8_valid)
{
    CHECK(form_utf8_valid("plain", 5));
    CHECK(form_utf8_valid("\xF0\x9F\x98\x80", 4));
    CHECK(!form_utf8_valid("\xF0\x9F\x98", 3));
    CHECK(!form_utf8_valid("\xF4\x90\x80\x80", 4)); /* > U+10FFFF */
    CHECK(!form_utf8_valid("\x80", 1));
}

TEST(parse_pairs)
{
    json_t *o = parse_ok("grant_type=password&username=alice&password=won+der%26land", 0);
    REQUIRE(o);
    CHECK_EQ_INT(json_object_size(o), 3);
    CHECK_STR(json_string_value(json_object_get(o, "grant_type")), "password");
    CHECK_STR(json_string_value(json_object_get(o, "password")), "won der&land");
    json_decref(o);
}

TEST(parse_edge_forms)
{
    json_t *o = parse_ok("&&a&b=&=x&c=1=2&", 0);
    REQUIRE(o);
    CHECK_STR(json_string_value(json_object_get(o, "a")), "");
    CHECK_STR(json_string_value(json_object_get(o, "b")), "");
    CHECK_STR(json_string_value(json_object_get(o, "c")), "1=2");
    CHECK_EQ_INT(json_object_size(o), 3); /* the empty name was skipped */
    json_decref(o);
    o = parse_ok("", FORM_STRICT);
    REQUIRE(o);
    CHECK_EQ_INT(json_object_size(o), 0);
    json_decref(o);
}

TEST(lone_name_fills_the_buffer)
{
    /* regression (found by fuzz_routes): a single pair without '=' spanning the whole
     * input needs len + 2 bytes of scratch; caught by `make asan` */
    json_t *o = parse_ok("abc", FORM_STRICT);
    REQUIRE(o);
    CHECK_STR(json_string_value(json_object_get(o, "abc")), "");
    json_decref(o);
}

TEST(duplicates_first_wins_or_rejected)
{
    json_t *o = parse_ok("a=1&a=2", 0);
    REQUIRE(o);
    CHECK_STR(json_string_value(json_object_get(o, "a")), "1");
    json_decref(o);

    char err[128] = "";
    o = (json_t *)1;
    CHECK_EQ_INT(form_parse("a=1&b=2&a=3", 11, FORM_STRICT, 0, &o, err, sizeof err), SC_EDUPLICATE);
    CHECK(o == NULL);
    CHECK(strstr(err, "'a'") != NULL);
    /* an encoded name is the same name */
    CHECK_EQ_INT(form_parse("ab=1&a%62=2", 11, FORM_STRICT, 0, &o, err, sizeof err), SC_EDUPLICATE);
    CHECK_EQ_INT(form_parse("=1", 2, FORM_STRICT, 0, &o, err, sizeof err), SC_EMALFORMED);
}

TEST(bad_encoding_and_limits)
{
    json_t *o = NULL;
    char err[128];
    CHECK_EQ_INT(form_parse("a=%zz", 5, 0, 0, &o, err, sizeof err), SC_EMALFORMED);
    CHECK(o == NULL);
    CHECK_EQ_INT(form_parse("a%=1", 4, 0, 0, &o, err, sizeof err), SC_EMALFORMED);
    CHECK_EQ_INT(form_parse("a=1&b=2&c=3", 11, 0, 2, &o, err, sizeof err), SC_ETOOLARGE);
    CHECK_EQ_INT(form_parse("a=1&b=2", 7, 0, 2, &o, err, sizeof err), SC_OK);
    json_decref(o);
    /* the length bounds the input, not a NUL */
    CHECK_EQ_INT(form_parse("a=1&b=2", 3, FORM_STRICT, 0, &o, err, sizeof err), SC_OK);
    REQUIRE(o);
    CHECK_EQ_INT(json_object_size(o), 1);
    json_decref(o);
}

TEST(error_names_are_cut_on_char_boundary)
{
    char s[300], err[200];
    json_t *o = NULL;
    /* 40 ASCII + many 2-byte characters: a cut inside one would leave broken UTF-8 */
    size_t n = 0;
    for (int i = 0; i < 47; i++) s[n++] = 'x';
    for (int i = 0; i < 10; i++) s[n++] = '\xC3', s[n++] = '\xA9';
    memcpy(s + n, "=1&", 3);
    n += 3;
    size_t half = n;
    memcpy(s + n, s, half);
    n += half - 1;
    s[n] = '\0';
    CHECK_EQ_INT(form_parse(s, n, FORM_STRICT, 0, &o, err, sizeof err), SC_EDUPLICATE);
    CHECK(form_utf8_valid(err, strlen(err)));
}

TEST_MAIN()
