// Log selection, iteration discovery (symlinked cool-down folders, release), --iterations, output checks.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/error.hpp"
#include "iteration_discovery.hpp"
#include "log_selection.hpp"
#include "outputs.hpp"

using namespace m2h::launch;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const std::string& name) {
    const auto d = fs::path(::testing::TempDir()) / ("m2h_launcher_" + name);
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

void touch(const fs::path& p, const std::string& text = "") {
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
}

std::vector<std::string> keys(const std::vector<Iteration>& its) {
    std::vector<std::string> k;
    for (const auto& i : its) k.push_back(i.key());
    return k;
}

// A safetensors file with one tensor of `data_bytes` bytes; `cut` bytes missing at the end.
void write_safetensors(const fs::path& p, std::size_t data_bytes, std::size_t cut = 0) {
    std::string header = R"({"__metadata__":{"format":"pt"},"w":{"dtype":"U8","shape":[)" + std::to_string(data_bytes) +
                         R"(],"data_offsets":[0,)" + std::to_string(data_bytes) + "]}}";
    while (header.size() % 8) header += ' ';
    std::string bytes;
    for (int i = 0; i < 8; ++i) bytes += static_cast<char>((header.size() >> (8 * i)) & 0xff);
    bytes += header + std::string(data_bytes, 'x');
    touch(p, bytes.substr(0, bytes.size() - cut));
}

}  // namespace

TEST(LauncherLogSelection, ListFolderAndFile) {
    const auto d = fresh_dir("logs");
    for (const char* n : {"b_2.out", "a_1.out", "c.err", "notes.txt"}) touch(d / n);
    fs::create_directories(d / "sub.out");  // a folder, not a log
    touch(d / "sub.out" / "x.out");
    EXPECT_EQ(select_logs(d.string()), (std::vector<std::string>{(d / "a_1.out").string(), (d / "b_2.out").string()}));
    EXPECT_EQ(select_logs((d / "c.err").string()), std::vector<std::string>{(d / "c.err").string()});
    const auto list = (d / "b_2.out").string() + "::" + (d / "c.err").string();
    EXPECT_EQ(select_logs(list), (std::vector<std::string>{(d / "b_2.out").string(), (d / "c.err").string()}));
    try {
        select_logs((d / "b_2.out").string() + "::" + (d / "missing.out").string());
        FAIL();
    } catch (const m2h::Error& e) {
        EXPECT_NE(std::string(e.what()).find("missing.out"), std::string::npos);
    }
    const auto empty = fresh_dir("logs_empty");
    try {
        select_logs(empty.string());
        FAIL();
    } catch (const m2h::Error& e) {
        EXPECT_EQ(std::string(e.what()), "No train logs found in " + empty.string());
    }
    EXPECT_THROW(select_logs((d / "nothing_here").string()), m2h::Error);
}

TEST(LauncherIterations, DiscoversIterFoldersAndRelease) {
    const auto root = fresh_dir("plain");
    for (const char* n : {"iter_0000200", "iter_0000100", "release", "iter_abc", "mp_rank_00"}) fs::create_directories(root / n);
    touch(root / "iter_0000300");  // a file, not an iteration
    touch(root / "latest_checkpointed_iteration.txt", "200");
    const auto its = discover_iterations(root.string());
    EXPECT_EQ(keys(its), (std::vector<std::string>{"release", "100", "200"}));
    EXPECT_EQ(its[2].folder_name(), "iter_0000200");
    EXPECT_EQ(its[0].folder_name(), "release");
    try {
        discover_iterations((root / "gone").string());
        FAIL();
    } catch (const m2h::Error& e) {
        EXPECT_NE(std::string(e.what()).find("checkpoint folder not found"), std::string::npos);
    }
}

TEST(LauncherIterations, SavesInProgressAreMarked) {
    const auto root = fresh_dir("saving");
    touch(root / "latest_checkpointed_iteration.txt", "100");
    // iter 100: named by the tracker. iter 200: every rank file ends with its zip directory. iter 300: one rank
    // file has no zip directory yet. iter 400: torch_dist without .metadata. iter 500: torch_dist, complete.
    const std::string eocd = std::string("PK\x05\x06", 4) + std::string(18, '\0');
    touch(root / "iter_0000100" / "mp_rank_00" / "model_optim_rng.pt", "partial");
    touch(root / "iter_0000200" / "mp_rank_00" / "model_optim_rng.pt", "data" + eocd);
    touch(root / "iter_0000300" / "mp_rank_00" / "model_optim_rng.pt", "data" + eocd);
    touch(root / "iter_0000300" / "mp_rank_01" / "model_optim_rng.pt", "data" + eocd.substr(0, 21));
    touch(root / "iter_0000400" / "__0_0.distcp", "x");
    touch(root / "iter_0000400" / "metadata.json", "{}");
    touch(root / "iter_0000500" / "__0_0.distcp", "x");
    touch(root / "iter_0000500" / "metadata.json", "{}");
    touch(root / "iter_0000500" / ".metadata", "x");
    const auto its = discover_iterations(root.string());
    ASSERT_EQ(keys(its), (std::vector<std::string>{"100", "200", "300", "400", "500"}));
    EXPECT_EQ(its[0].saving, "");
    EXPECT_EQ(its[1].saving, "");
    EXPECT_EQ(its[2].saving, "the end of mp_rank_01/model_optim_rng.pt (its zip directory)");
    EXPECT_NE(its[3].saving.find(".metadata"), std::string::npos);
    EXPECT_EQ(its[4].saving, "");
}

TEST(LauncherIterations, CooldownSymlinkBringsEarlierIterationsOfItsTarget) {
    const auto base = fresh_dir("cooldown");
    for (const char* n : {"iter_0001000", "iter_0002000", "iter_0003000"}) fs::create_directories(base / "pre" / n);
    fs::create_directories(base / "cool" / "iter_0004000");
    fs::create_symlink(base / "pre" / "iter_0002000", base / "cool" / "iter_0002000");
    fs::create_symlink(base / "pre" / "iter_0009999", base / "cool" / "iter_0009999");  // dangling: skipped
    const auto its = discover_iterations((base / "cool").string());
    EXPECT_EQ(keys(its), (std::vector<std::string>{"1000", "2000", "4000"}));  // 3000 is not before the link
    EXPECT_TRUE(its[0].borrowed);
    EXPECT_EQ(its[0].folder, (base / "pre" / "iter_0001000").string());
    EXPECT_FALSE(its[1].borrowed);
}

TEST(LauncherIterations, Selection) {
    std::vector<Iteration> avail{{true, 0, "/r/release", false}, {false, 100, "/r/iter_0000100", false},
                                 {false, 300, "/r/iter_0000300", false}};
    EXPECT_EQ(keys(select_iterations(avail, parse_iteration_selection("all")).chosen),
              (std::vector<std::string>{"release", "100", "300"}));
    EXPECT_EQ(keys(select_iterations(avail, parse_iteration_selection("latest")).chosen), std::vector<std::string>{"300"});
    const auto listed = select_iterations(avail, parse_iteration_selection("0000300, iter_0000100,200,300"));
    EXPECT_EQ(keys(listed.chosen), (std::vector<std::string>{"100", "300"}));
    EXPECT_EQ(listed.not_on_disk, std::vector<std::string>{"iter_0000200"});
    EXPECT_EQ(keys(select_iterations({avail[0]}, parse_iteration_selection("latest")).chosen), std::vector<std::string>{"release"});
    EXPECT_TRUE(select_iterations({}, parse_iteration_selection("latest")).chosen.empty());
    for (const char* bad : {"last", "1,,x", "-5", "1.5"}) EXPECT_THROW(parse_iteration_selection(bad), m2h::Error) << bad;
}

TEST(LauncherOutputs, Layout) {
    EXPECT_EQ(log_name_of("/logs/open-sci-ref_model-1.7b_rollout_4242.out"), "open-sci-ref_model-1.7b_rollout_4242");
    EXPECT_EQ(log_name_of("/logs/x-out_1.out"), "x-out_1");  // the original's sed 's/.out//' mangled these
    EXPECT_EQ(log_name_of("/logs/train.log"), "train.log");
    EXPECT_EQ(output_dir("/save/", "run_1", Iteration{false, 72661, "", false}), "/save/run_1/hf/iter_0072661");
}

TEST(LauncherOutputs, CompleteOnlyWithConfigAndWholeSafetensors) {
    const auto d = fresh_dir("out");
    EXPECT_FALSE(check_output((d / "none").string()).exists);
    const auto one = d / "one";
    write_safetensors(one / "model.safetensors", 100);
    EXPECT_EQ(check_output(one.string()).problem, "config.json is missing");
    touch(one / "config.json", "{}");
    EXPECT_TRUE(check_output(one.string()).complete);
    write_safetensors(one / "model.safetensors", 100, 1);
    EXPECT_NE(check_output(one.string()).problem.find("truncated"), std::string::npos);

    const auto sharded = d / "sharded";
    touch(sharded / "config.json", "{}");
    touch(sharded / "model.safetensors.index.json",
          R"({"metadata":{"total_size":30},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}})");
    write_safetensors(sharded / "model-00001-of-00002.safetensors", 10);
    EXPECT_NE(check_output(sharded.string()).problem.find("model-00002-of-00002.safetensors is missing"), std::string::npos);
    write_safetensors(sharded / "model-00002-of-00002.safetensors", 20);
    EXPECT_TRUE(check_output(sharded.string()).complete);
}

TEST(LauncherOutputs, LeftoverStagingFoldersWithTheirSizes) {
    const auto hf = fresh_dir("leftovers") / "hf";
    touch(hf / "iter_0000100" / "config.json", "{}");                            // an output, not a leftover
    touch(hf / ".iter_0000200.m2h-partial" / "model.safetensors", std::string(1000, 'x'));
    touch(hf / ".iter_0000200.m2h-partial" / "config.json", "{}");
    touch(hf / ".iter_0000100.m2h-partial.old" / "model.safetensors", std::string(10, 'x'));
    touch(hf / ".notes", "hidden file");
    const auto left = leftover_staging(hf.string());
    ASSERT_EQ(left.size(), 2u);
    EXPECT_EQ(left[0].output, (hf / "iter_0000100").string());
    EXPECT_EQ(left[0].bytes, 10u);
    EXPECT_EQ(left[1].output, (hf / "iter_0000200").string());
    EXPECT_EQ(left[1].bytes, 1002u);
    EXPECT_TRUE(leftover_staging((hf / "missing").string()).empty());
}
