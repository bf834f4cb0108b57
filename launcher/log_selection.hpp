#pragma once
// Which training logs to read, from --train_logs_dir_or_path, as the original converter.py chose them.
#include <string>
#include <vector>

namespace m2h::launch {

// `a::b::c` → those files, in that order; a folder → every *.out directly inside it, sorted by name; anything
// else → that one file. Throws m2h::Error("No train logs found in ...") when the result is empty, and names a
// listed file that does not exist.
std::vector<std::string> select_logs(const std::string& spec);

}  // namespace m2h::launch
