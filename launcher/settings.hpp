#pragma once
// The command line and the cluster profile, merged: command line > profile > default.
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace m2h::launch {

inline constexpr const char* kProgram = "megatron2hf-launch";

enum class Command { Launch, Watch, Status, Clean };

struct Settings {
    Command command = Command::Launch;
    std::map<std::string, std::string> values;             // canonical name → value
    std::map<std::string, std::vector<std::string>> lists;  // canonical name → values
    std::set<std::string> flags;
    std::string profile_file;
    std::vector<std::string> args;  // the command line as given, after the command word

    std::string get(const std::string& name, const std::string& fallback = "") const;
    bool has(const std::string& name) const;
    bool flag(const std::string& name) const { return flags.count(name) > 0; }
    std::vector<std::string> list(const std::string& name) const;
    // nullopt when not given; throws m2h::Error when given but not a whole number.
    std::optional<int> integer(const std::string& name) const;
};

// nullopt when --help or --version was answered (and nothing else is to be done). Throws m2h::Error for a bad
// command line or profile.
std::optional<Settings> parse_settings(int argc, char** argv);

// The option's value; throws m2h::Error when it is missing or empty.
std::string require(const Settings& s, const std::string& name);

// `p` made absolute and normalised (not resolved: symlinks stay as given).
std::string absolute(const std::string& p);

}  // namespace m2h::launch
