/* test.h - the unit-test harness: a test is a function registered with TEST(name); CHECK*
 * record a failure and go on, REQUIRE* fail and leave the test. Each binary prints
 * "PASS name" / "FAIL name: file:line: what" per test and a last line "N passed, N failed";
 * tests/run.sh adds those up. Exit status: 0 when nothing failed. */
#ifndef SC_TEST_H
#define SC_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*test_fn)(void);
struct test_case {
    const char *name;
    test_fn fn;
};

extern struct test_case test__cases[];
extern int test__ncases;
extern int test__failed_now;

void test__register(const char *name, test_fn fn);
void test__fail(const char *file, int line, const char *what);

/* clang-format off */
#define TEST(name)                                                            \
    static void test_##name(void);                                            \
    __attribute__((constructor)) static void test__reg_##name(void)           \
    { test__register(#name, test_##name); }                                   \
    static void test_##name(void)

#define CHECK(cond)                                                           \
    do { if (!(cond)) test__fail(__FILE__, __LINE__, #cond); } while (0)
#define REQUIRE(cond)                                                         \
    do { if (!(cond)) { test__fail(__FILE__, __LINE__, #cond); return; } } while (0)
#define CHECK_EQ_INT(a, b)                                                    \
    do { long long a_ = (long long)(a), b_ = (long long)(b);                  \
         if (a_ != b_) { char w_[256];                                        \
             snprintf(w_, sizeof w_, "%s == %s (%lld != %lld)", #a, #b, a_, b_); \
             test__fail(__FILE__, __LINE__, w_); } } while (0)
#define CHECK_STR(a, b)                                                       \
    do { const char *a_ = (a), *b_ = (b);                                     \
         if (!a_ || !b_ || strcmp(a_, b_) != 0) { char w_[512];               \
             snprintf(w_, sizeof w_, "%s == %s (\"%.200s\" != \"%.200s\")", #a, #b, \
                      a_ ? a_ : "(null)", b_ ? b_ : "(null)");                \
             test__fail(__FILE__, __LINE__, w_); } } while (0)

/* Define once per test binary (in exactly one .c file) */
#define TEST_MAIN()                                                           \
    struct test_case test__cases[512];                                        \
    int test__ncases;                                                         \
    int test__failed_now;                                                     \
    void test__register(const char *name, test_fn fn)                         \
    { if (test__ncases < 512) { test__cases[test__ncases].name = name;        \
        test__cases[test__ncases++].fn = fn; } }                              \
    void test__fail(const char *file, int line, const char *what)             \
    { printf("  %s:%d: %s\n", file, line, what); test__failed_now = 1; }    \
    int main(int argc, char **argv)                                           \
    { int pass = 0, fail = 0;                                                 \
      setvbuf(stdout, NULL, _IOLBF, 0);                                       \
      for (int i = 0; i < test__ncases; i++) {                                \
          if (argc > 1 && strstr(test__cases[i].name, argv[1]) == NULL) continue; \
          test__failed_now = 0;                                               \
          printf("RUN  %s\n", test__cases[i].name);                           \
          test__cases[i].fn();                                                \
          if (test__failed_now) { fail++; printf("FAIL %s\n", test__cases[i].name); } \
          else { pass++; printf("PASS %s\n", test__cases[i].name); }          \
      }                                                                       \
      printf("%d passed, %d failed\n", pass, fail);                           \
      return fail ? 1 : 0; }
/* clang-format on */

#endif
