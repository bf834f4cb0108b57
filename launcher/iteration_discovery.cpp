#include "iteration_discovery.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <set>

#include "common/error.hpp"
#include "formats/save_state.hpp"

namespace m2h::launch {
namespace fs = std::filesystem;
namespace {

std::optional<std::int64_t> parse_number(std::string_view s) {
    std::int64_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < 0) return std::nullopt;
    return v;
}

// "iter_0000100" → 100; anything else → nullopt.
std::optional<std::int64_t> iter_number(const std::string& name) {
    if (!name.starts_with("iter_")) return std::nullopt;
    const std::string_view digits = std::string_view(name).substr(5);
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
    return parse_number(digits);
}

}  // namespace

std::string Iteration::key() const { return release ? "release" : std::to_string(number); }

std::string Iteration::folder_name() const {
    if (release) return "release";
    char buf[32];
    std::snprintf(buf, sizeof buf, "iter_%07lld", static_cast<long long>(number));
    return buf;
}

std::vector<Iteration> discover_iterations(const std::string& root) {
    std::error_code ec;
    if (!fs::is_directory(root, ec)) throw Error(root, fs::exists(root, ec) ? "is not a folder" : "checkpoint folder not found");
    std::vector<Iteration> found;
    std::set<std::int64_t> have;
    std::vector<std::pair<std::int64_t, fs::path>> symlinks;  // (number, target)
    for (const auto& e : fs::directory_iterator(root, ec)) {
        const auto name = e.path().filename().string();
        if (!e.is_directory(ec)) continue;  // follows symlinks; a dangling one is skipped
        if (name == "release") {
            found.push_back({true, 0, e.path().string(), false, ""});
            continue;
        }
        const auto n = iter_number(name);
        if (!n) continue;
        found.push_back({false, *n, e.path().string(), false, ""});
        have.insert(*n);
        if (e.is_symlink(ec)) symlinks.emplace_back(*n, fs::canonical(e.path(), ec));
    }
    if (ec) throw Error(root, "cannot list: " + ec.message());
    for (const auto& [n, target] : symlinks) {
        std::error_code ec2;
        for (const auto& e : fs::directory_iterator(target.parent_path(), ec2)) {
            const auto m = iter_number(e.path().filename().string());
            if (!m || *m >= n || have.count(*m) || !e.is_directory(ec2)) continue;
            found.push_back({false, *m, e.path().string(), true, ""});
            have.insert(*m);
        }
    }
    std::sort(found.begin(), found.end(), [](const Iteration& a, const Iteration& b) {
        if (a.release != b.release) return a.release;
        return a.number < b.number;
    });
    for (auto& it : found) {
        const auto tracker = formats::tracker_iteration(fs::path(it.folder).parent_path().string());
        const auto state = formats::save_state(it.folder, it.release ? std::nullopt : std::optional(it.number), tracker);
        if (!state.complete) it.saving = state.missing;
    }
    return found;
}

IterationSelection parse_iteration_selection(std::string_view text) {
    IterationSelection s;
    if (text == "all" || text.empty()) return s;
    if (text == "latest") {
        s.kind = IterationSelection::Kind::Latest;
        return s;
    }
    s.kind = IterationSelection::Kind::List;
    std::size_t start = 0;
    while (start <= text.size()) {
        auto end = text.find(',', start);
        if (end == std::string_view::npos) end = text.size();
        std::string_view item = text.substr(start, end - start);
        start = end + 1;
        while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
        while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
        if (item.starts_with("iter_")) item.remove_prefix(5);
        if (item == "release") {
            s.numbers.push_back(-1);
            continue;
        }
        const auto n = parse_number(item);
        if (!n) throw Error("--iterations", "expected latest, all or N[,N...], got '" + std::string(text) + "'");
        s.numbers.push_back(*n);
    }
    return s;
}

SelectedIterations select_iterations(const std::vector<Iteration>& available, const IterationSelection& selection) {
    SelectedIterations out;
    switch (selection.kind) {
        case IterationSelection::Kind::All:
            out.chosen = available;
            break;
        case IterationSelection::Kind::Latest: {
            // The highest number; a checkpoint with only release/ has that as its latest.
            const Iteration* best = nullptr;
            for (const auto& it : available)
                if (!best || (best->release && !it.release) || (!it.release && it.number > best->number)) best = &it;
            if (best) out.chosen.push_back(*best);
            break;
        }
        case IterationSelection::Kind::List: {
            std::set<std::int64_t> seen;
            for (const auto n : selection.numbers) {
                if (!seen.insert(n).second) continue;
                const auto it = std::find_if(available.begin(), available.end(), [&](const Iteration& a) {
                    return n < 0 ? a.release : (!a.release && a.number == n);
                });
                if (it == available.end())
                    out.not_on_disk.push_back(n < 0 ? "release" : Iteration{false, n, "", false, ""}.folder_name());
                else
                    out.chosen.push_back(*it);
            }
            std::sort(out.chosen.begin(), out.chosen.end(), [](const Iteration& a, const Iteration& b) {
                if (a.release != b.release) return a.release;
                return a.number < b.number;
            });
            break;
        }
    }
    return out;
}

}  // namespace m2h::launch
