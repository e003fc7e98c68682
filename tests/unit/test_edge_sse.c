/* test_edge_sse.c - the id of a Server-Sent Events stream (services/edge/session_sse.c):
 * one position per topic, the inbox first; an empty field is a position not known yet; what
 * is not an id of the request's topics is refused (the edge answers 400). */
#include "test.h"

#include "../../services/edge/sse.h"

#include <stdint.h>
#include <string.h>

static int parse(const char *id, uint64_t *pos, size_t npos)
{
    return sse_parse_id(id, strlen(id), pos, npos);
}

TEST(positions_one_per_topic)
{
    uint64_t p[3];
    CHECK_EQ_INT(parse("7.4031.4029", p, 3), 0);
    CHECK(p[0] == 7 && p[1] == 4031 && p[2] == 4029);
    CHECK_EQ_INT(parse("0", p, 1), 0);
    CHECK(p[0] == 0);
    CHECK_EQ_INT(parse("9007199254740991", p, 1), 0); /* 2^53 - 1 */
    CHECK(p[0] == 9007199254740991ULL);
}

TEST(empty_fields_are_unknown_positions)
{
    uint64_t p[3];
    CHECK_EQ_INT(parse("5..7", p, 3), 0);
    CHECK(p[0] == 5 && p[1] == UINT64_MAX && p[2] == 7);
    CHECK_EQ_INT(parse("..", p, 3), 0);
    CHECK(p[0] == UINT64_MAX && p[1] == UINT64_MAX && p[2] == UINT64_MAX);
    CHECK_EQ_INT(parse("", p, 1), 0);
    CHECK(p[0] == UINT64_MAX);
}

TEST(not_an_id_of_these_topics)
{
    uint64_t p[3];
    CHECK_EQ_INT(parse("1.2", p, 3), -1);     /* too few */
    CHECK_EQ_INT(parse("1.2.3.4", p, 3), -1); /* too many */
    CHECK_EQ_INT(parse("1.2.3.", p, 3), -1);
    CHECK_EQ_INT(parse("1.x.3", p, 3), -1);
    CHECK_EQ_INT(parse("1.-2.3", p, 3), -1);
    CHECK_EQ_INT(parse(" 1.2.3", p, 3), -1);
    CHECK_EQ_INT(parse("1,2,3", p, 3), -1);
    CHECK_EQ_INT(parse("9007199254740992", p, 1), -1);  /* 2^53 */
    CHECK_EQ_INT(parse("00000000000000001", p, 1), -1); /* 17 digits */
    CHECK_EQ_INT(sse_parse_id("1.2\0"
                              "3",
                              5, p, 2),
                 -1); /* a NUL inside */
}

TEST_MAIN()
