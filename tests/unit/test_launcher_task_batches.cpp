// --iterations-per-task: which iterations share an array task, and the automatic count.
#include <gtest/gtest.h>

#include "task_batches.hpp"

using namespace m2h::launch;

namespace {

BatchItem item(const std::string& root, int it) {
    const auto name = "iter_" + std::string(7 - std::to_string(it).size(), '0') + std::to_string(it);
    return {root + "/" + name, std::to_string(it), "/save/run/hf/" + name};
}

}  // namespace

TEST(TaskBatches, ConsecutiveIterationsOfOneRootUpToTheCount) {
    const auto b = batch_items({item("/ck", 100), item("/ck", 200), item("/ck", 300), item("/ck", 400), item("/ck", 500)}, 2);
    ASSERT_EQ(b.size(), 3u);
    EXPECT_EQ(b[0].iteration, "100,200");
    EXPECT_EQ(b[0].input, "/ck") << "several iterations: the engine gets their root";
    EXPECT_EQ(b[0].output, "/save/run/hf") << "and the folder that gets iter_NNNNNNN per iteration";
    EXPECT_EQ(b[0].members, (std::vector<std::size_t>{0, 1}));
    EXPECT_EQ(b[2].iteration, "500");
    EXPECT_EQ(b[2].input, "/ck/iter_0000500") << "one iteration: as without batching";
    EXPECT_EQ(b[2].output, "/save/run/hf/iter_0000500");
}

TEST(TaskBatches, AnotherRootOrReleaseStartsANewTask) {
    // A cool-down run: 100 and 200 are borrowed from the pre-cool-down root, 300 is its own.
    const auto b = batch_items({item("/pre", 100), item("/pre", 200), item("/cool", 300)}, 40);
    ASSERT_EQ(b.size(), 2u);
    EXPECT_EQ(b[0].iteration, "100,200");
    EXPECT_EQ(b[1].iteration, "300");
    const auto r = batch_items({{"/ck/release", "release", "/save/run/hf/release"}, item("/ck", 100), item("/ck", 200)}, 40);
    ASSERT_EQ(r.size(), 2u);
    EXPECT_EQ(r[0].iteration, "release");
    EXPECT_EQ(r[1].iteration, "100,200");
    EXPECT_EQ(batch_items({item("/ck", 100), item("/ck", 200)}, 1).size(), 2u);
}

TEST(TaskBatches, AutomaticCountFromTheModelSize) {
    EXPECT_EQ(auto_iterations_per_task(std::nullopt), 1u);
    EXPECT_EQ(auto_iterations_per_task(400'000'000), 40u);
    EXPECT_EQ(auto_iterations_per_task(100'000'000), 40u) << "at most 40";
    EXPECT_EQ(auto_iterations_per_task(2'000'000'000), 8u);
    EXPECT_EQ(auto_iterations_per_task(16'000'000'000), 1u);
    EXPECT_EQ(auto_iterations_per_task(140'000'000'000), 1u);
}
