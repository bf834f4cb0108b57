#include "log_selection.hpp"

#include <algorithm>
#include <filesystem>

#include "common/error.hpp"

namespace m2h::launch {
namespace fs = std::filesystem;

std::vector<std::string> select_logs(const std::string& spec) {
    std::vector<std::string> logs;
    std::error_code ec;
    if (spec.find("::") != std::string::npos) {
        std::size_t start = 0;
        while (start <= spec.size()) {
            auto end = spec.find("::", start);
            if (end == std::string::npos) end = spec.size();
            const auto item = spec.substr(start, end - start);
            start = end + 2;
            if (item.empty()) continue;
            if (!fs::is_regular_file(item, ec)) throw Error(item, "listed in --train_logs_dir_or_path but not a file");
            logs.push_back(item);
        }
    } else if (fs::is_directory(spec, ec)) {
        // Sorted, so that submissions (and their job ids) follow the log names, unlike the original glob.
        for (const auto& e : fs::directory_iterator(spec, ec))
            if (e.path().extension() == ".out" && e.is_regular_file(ec)) logs.push_back(e.path().string());
        std::sort(logs.begin(), logs.end());
    } else if (fs::is_regular_file(spec, ec)) {
        logs.push_back(spec);
    }
    if (logs.empty()) throw Error("", "No train logs found in " + spec);
    return logs;
}

}  // namespace m2h::launch
