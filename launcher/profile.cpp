#include "profile.hpp"

#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/error.hpp"

namespace m2h::launch {
namespace fs = std::filesystem;
using nlohmann::json;

std::string canonical_option_name(std::string name) {
    std::replace(name.begin(), name.end(), '_', '-');
    return name;
}

namespace {

std::string scalar(const json& v, const std::string& file, const std::string& key) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
    if (v.is_number_integer()) return std::to_string(v.get<long long>());
    if (v.is_number()) return v.dump();
    throw Error(file, "\"" + key + "\": expected a string, number, boolean or a list of those");
}

}  // namespace

Profile parse_profile(const std::string& text, const std::string& file, const std::vector<std::string>& allowed) {
    json j;
    try {
        j = json::parse(text, nullptr, true, /*ignore_comments=*/true);
    } catch (const json::exception& e) {
        throw Error(file, std::string("not valid JSON: ") + e.what());
    }
    if (!j.is_object()) throw Error(file, "expected a JSON object of option values");
    Profile p;
    for (const auto& [key, value] : j.items()) {
        if (key.starts_with("#") || key == "description") continue;  // room for comments
        const auto name = canonical_option_name(key);
        if (std::find(allowed.begin(), allowed.end(), name) == allowed.end())
            throw Error(file, "unknown key \"" + key + "\" (a profile may set: " + [&] {
                std::string all;
                for (const auto& a : allowed) all += (all.empty() ? "" : ", ") + a;
                return all;
            }() + ")");
        ProfileValue v;
        if (value.is_array())
            for (const auto& item : value) v.values.push_back(scalar(item, file, key));
        else if (!value.is_null())
            v.values.push_back(scalar(value, file, key));
        p[name] = std::move(v);
    }
    return p;
}

std::string resolve_profile_path(const std::string& name_or_path, const std::vector<std::string>& search_dirs) {
    std::error_code ec;
    if (fs::is_regular_file(name_or_path, ec)) return name_or_path;
    if (name_or_path.find('/') == std::string::npos) {
        for (const auto& dir : search_dirs) {
            for (const auto& candidate : {fs::path(dir) / (name_or_path + ".json"), fs::path(dir) / name_or_path})
                if (fs::is_regular_file(candidate, ec)) return candidate.string();
        }
    }
    std::string where;
    for (const auto& d : search_dirs) where += (where.empty() ? "" : ", ") + d;
    throw Error(name_or_path, "profile not found (not a file, and not a name in " + (where.empty() ? "no profile folder" : where) + ")");
}

}  // namespace m2h::launch
