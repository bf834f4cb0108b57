// Finding the run's tokenizer from the args: a local folder, or a Hub id in the local Hugging Face cache
// (refs/main's snapshot); what cannot be found says where it was looked for.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "hub/tokenizer_lookup.hpp"

using namespace m2h::hub;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) {
    const auto d = fs::temp_directory_path() / ("m2h_tokenizer_lookup_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

void touch(const fs::path& p, const std::string& text = "{}") {
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
}

nlohmann::json hf_args(const std::string& model) {
    return {{"tokenizer_type", "HuggingFaceTokenizer"}, {"tokenizer_model", model}};
}

}  // namespace

TEST(TokenizerLookup, LocalFolder) {
    const auto d = scratch("local");
    touch(d / "tok" / "tokenizer.json");
    touch(d / "tok" / "tokenizer_config.json");
    touch(d / "tok" / "model.safetensors");  // not a tokenizer file
    const auto found = find_tokenizer(hf_args((d / "tok").string()), {});
    EXPECT_EQ(found.folder, (d / "tok").string());
    EXPECT_EQ(tokenizer_files(found.folder).size(), 2u);
    EXPECT_TRUE(find_tokenizer(hf_args((d / "empty").string()), {}).folder.empty());
    fs::create_directories(d / "empty");
    const auto empty = find_tokenizer(hf_args((d / "empty").string()), {});
    EXPECT_TRUE(empty.folder.empty());
    EXPECT_EQ(empty.looked_in, std::vector<std::string>{(d / "empty").string()});
    fs::remove_all(d);
}

TEST(TokenizerLookup, HubCacheSnapshot) {
    const auto d = scratch("cache");
    const auto repo = d / "hub" / "models--org--tiny";
    touch(repo / "snapshots" / "aaaa111" / "tokenizer.json");
    touch(repo / "snapshots" / "bbbb222" / "tokenizer.json");
    touch(repo / "refs" / "main", "bbbb222\n");
    auto found = find_tokenizer(hf_args("org/tiny"), {{"HF_HOME", d.string()}});
    EXPECT_EQ(found.folder, (repo / "snapshots" / "bbbb222").string());
    found = find_tokenizer(hf_args("org/tiny"), {{"HF_HUB_CACHE", (d / "hub").string()}, {"HF_HOME", "/nowhere"}});
    EXPECT_EQ(found.folder, (repo / "snapshots" / "bbbb222").string());
    // Without refs/main, two snapshots are ambiguous.
    fs::remove(repo / "refs" / "main");
    found = find_tokenizer(hf_args("org/tiny"), {{"HF_HOME", d.string()}});
    EXPECT_TRUE(found.folder.empty());
    EXPECT_EQ(found.looked_in, std::vector<std::string>{repo.string()});
    fs::remove_all(d);
}

TEST(TokenizerLookup, NothingNamedOrNothingSafe) {
    EXPECT_TRUE(find_tokenizer({{"tokenizer_type", "NullTokenizer"}}, {}).named.empty());
    EXPECT_TRUE(find_tokenizer({{"tokenizer_type", "HuggingFaceTokenizer"}}, {}).named.empty());
    const auto escaping = find_tokenizer(hf_args("../../etc/x"), {{"HOME", "/root"}});
    EXPECT_TRUE(escaping.folder.empty());
    EXPECT_EQ(escaping.looked_in, std::vector<std::string>{"../../etc/x"});
    EXPECT_EQ(find_tokenizer(hf_args("org/name"), {{"HOME", "/home/u"}}).looked_in,
              std::vector<std::string>{"/home/u/.cache/huggingface/hub/models--org--name"});
}
