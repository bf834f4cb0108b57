#pragma once
// Cluster profiles: a JSON object of option values (account, partition, qos, container_image, ...), so users do
// not repeat them on every call. Keys are option names without the dashes; '-' and '_' are interchangeable.
#include <map>
#include <string>
#include <vector>

namespace m2h::launch {

struct ProfileValue {
    std::vector<std::string> values;  // one for scalars; a JSON array gives several (for repeatable options)
};
using Profile = std::map<std::string, ProfileValue>;  // keyed by canonical name ('_' → '-')

std::string canonical_option_name(std::string name);

// Parses the profile text. `allowed` lists canonical option names; anything else is an error naming the file
// and the key. Values may be strings, numbers, booleans or arrays of those.
Profile parse_profile(const std::string& text, const std::string& file, const std::vector<std::string>& allowed);

// A path, or a name looked up as <dir>/<name>.json in each of `search_dirs`. Throws m2h::Error when not found.
std::string resolve_profile_path(const std::string& name_or_path, const std::vector<std::string>& search_dirs);

}  // namespace m2h::launch
