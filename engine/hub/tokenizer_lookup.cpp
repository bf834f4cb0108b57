#include "hub/tokenizer_lookup.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>

namespace m2h::hub {

namespace fs = std::filesystem;

namespace {

constexpr const char* kTokenizerFiles[] = {
    "tokenizer.json",   "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt",       "vocab.txt",             "tokenizer.model",         "spiece.model",      "chat_template.jinja",
    "chat_template.json",
};

std::string env_or(const std::map<std::string, std::string>& env, const char* name) {
    const auto it = env.find(name);
    return it == env.end() ? std::string() : it->second;
}

// The Hub cache folders to try, in the order huggingface_hub resolves them.
std::vector<fs::path> hub_caches(const std::map<std::string, std::string>& env) {
    if (const auto c = env_or(env, "HF_HUB_CACHE"); !c.empty()) return {c};
    if (const auto h = env_or(env, "HF_HOME"); !h.empty()) return {fs::path(h) / "hub"};
    if (const auto x = env_or(env, "XDG_CACHE_HOME"); !x.empty()) return {fs::path(x) / "huggingface" / "hub"};
    if (const auto home = env_or(env, "HOME"); !home.empty()) return {fs::path(home) / ".cache" / "huggingface" / "hub"};
    return {};
}

// A cached repository's snapshot: the one refs/main names, else the only one there is.
std::string cached_snapshot(const fs::path& repo) {
    std::error_code ec;
    std::ifstream ref(repo / "refs" / "main");
    std::string commit;
    if (ref >> commit && std::regex_match(commit, std::regex("[0-9a-f]{7,64}")) &&
        fs::is_directory(repo / "snapshots" / commit, ec))
        return (repo / "snapshots" / commit).string();
    std::vector<fs::path> snapshots;
    for (fs::directory_iterator it(repo / "snapshots", ec), end; !ec && it != end; it.increment(ec))
        if (it->is_directory(ec)) snapshots.push_back(it->path());
    return snapshots.size() == 1 ? snapshots.front().string() : std::string();
}

bool has_tokenizer_files(const std::string& folder) { return !tokenizer_files(folder).empty(); }

}  // namespace

TokenizerLookup find_tokenizer(const nlohmann::json& args, const std::map<std::string, std::string>& env) {
    TokenizerLookup out;
    if (!args.is_object()) return out;
    const auto type = args.value("tokenizer_type", nlohmann::json());
    const auto model = args.value("tokenizer_model", nlohmann::json());
    if (type != "HuggingFaceTokenizer" || !model.is_string() || model.get<std::string>().empty()) return out;
    out.named = model.get<std::string>();
    std::error_code ec;
    if (fs::is_directory(out.named, ec)) {
        out.looked_in.push_back(out.named);
        if (has_tokenizer_files(out.named)) out.folder = out.named;
        return out;
    }
    // A Hub id (organisation/name): nothing in it may leave the cache folder.
    if (!std::regex_match(out.named, std::regex("[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")) ||
        out.named.find("..") != std::string::npos) {
        out.looked_in.push_back(out.named);
        return out;
    }
    const auto slash = out.named.find('/');
    const auto repo_name = "models--" + out.named.substr(0, slash) + "--" + out.named.substr(slash + 1);
    for (const auto& cache : hub_caches(env)) {
        const auto repo = cache / repo_name;
        out.looked_in.push_back(repo.string());
        if (const auto snapshot = cached_snapshot(repo); !snapshot.empty() && has_tokenizer_files(snapshot)) {
            out.folder = snapshot;
            return out;
        }
    }
    return out;
}

std::vector<std::string> tokenizer_files(const std::string& folder) {
    std::vector<std::string> found;
    std::error_code ec;
    for (const char* name : kTokenizerFiles) {
        const auto path = fs::path(folder) / name;
        if (fs::is_regular_file(path, ec)) found.push_back(path.string());  // a cache's symlinks to blobs count
    }
    return found;
}

std::map<std::string, std::string> tokenizer_environment() {
    std::map<std::string, std::string> env;
    for (const char* name : {"HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "HOME"})
        if (const char* v = std::getenv(name)) env[name] = v;
    return env;
}

}  // namespace m2h::hub
