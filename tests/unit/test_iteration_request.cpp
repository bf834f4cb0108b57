// --iteration with one or several iterations: parsing, selection among the folders on disk, output names.
#include <gtest/gtest.h>

#include "common/error.hpp"
#include "formats/iteration_request.hpp"

using namespace m2h::formats;

TEST(IterationRequest, OneIteration) {
    EXPECT_FALSE(parse_iteration_request("latest").several());
    const auto one = parse_iteration_request("1000");
    EXPECT_EQ(one.kind, IterationRequest::Kind::List);
    EXPECT_FALSE(one.several()) << "a single number converts into --output itself, as before";
}

TEST(IterationRequest, ListsRangesAndAll) {
    const auto list = parse_iteration_request("300,100,2000");
    EXPECT_TRUE(list.several());
    EXPECT_EQ(select_iterations(list, {100, 200, 300}), (std::vector<std::int64_t>{300, 100, 2000}))
        << "a list is kept as given: an iteration not on disk is reported by its conversion";
    const auto range = parse_iteration_request("200-300");
    EXPECT_TRUE(range.several());
    EXPECT_EQ(select_iterations(range, {400, 100, 300, 200, 300}), (std::vector<std::int64_t>{200, 300}));
    EXPECT_TRUE(select_iterations(parse_iteration_request("5-7"), {100}).empty());
    EXPECT_EQ(select_iterations(parse_iteration_request("all"), {300, 100}), (std::vector<std::int64_t>{100, 300}));
    EXPECT_TRUE(parse_iteration_request("7-7").several()) << "a range writes per-iteration folders even for one match";
}

TEST(IterationRequest, Errors) {
    for (const char* bad : {"", "x", "-5", "1,,2", "1,", "3-", "-", "2-1", "1,1", "1.5", "all,1", "latest-3"})
        EXPECT_THROW(parse_iteration_request(bad), m2h::Error) << bad;
}

TEST(IterationRequest, OutputPerIteration) {
    EXPECT_EQ(output_for_iteration("/save/run/hf", 1000), "/save/run/hf/iter_0001000");
    EXPECT_EQ(output_for_iteration("/save/run/hf/", 1000), "/save/run/hf/iter_0001000");
    EXPECT_EQ(output_for_iteration("/save/{iteration}/hf", 1000), "/save/0001000/hf");
    EXPECT_EQ(with_iteration("run/{iteration}/x{iteration}", 12345678), "run/12345678/x12345678");
    EXPECT_TRUE(has_iteration_placeholder("g_{iteration}"));
    EXPECT_FALSE(has_iteration_placeholder("g_{iter}"));
}
