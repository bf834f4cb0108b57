#include "training_provenance.hpp"

#include <cctype>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <regex>

#include <fmt/format.h>

namespace m2h::launch {

namespace {

bool digits(std::string_view s) {
    return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos;
}

// The first "YYYY-MM-DD HH:MM:SS" in `line` (Megatron's "[2025-01-01 10:00:05] iteration ..." lines and its
// "datetime: ..." lines).
std::optional<std::string_view> timestamp_in(std::string_view line) {
    for (std::size_t i = 0; i + 19 <= line.size(); ++i) {
        const auto t = line.substr(i, 19);
        if (t[4] == '-' && t[7] == '-' && t[10] == ' ' && t[13] == ':' && t[16] == ':' && digits(t.substr(0, 4)) &&
            digits(t.substr(5, 2)) && digits(t.substr(8, 2)) && digits(t.substr(11, 2)) && digits(t.substr(14, 2)) &&
            digits(t.substr(17, 2)))
            return t;
    }
    return std::nullopt;
}

// Seconds since 1970 of a timestamp (days from the civil date, as in Howard Hinnant's algorithm).
std::int64_t seconds_of(std::string_view t) {
    const auto n = [&](std::size_t at, std::size_t len) { return std::stoll(std::string(t.substr(at, len))); };
    std::int64_t y = n(0, 4), m = n(5, 2), d = n(8, 2);
    y -= m <= 2;
    const std::int64_t era = (y >= 0 ? y : y - 399) / 400, yoe = y - era * 400;
    const std::int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1, doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    const std::int64_t days = era * 146097 + doe - 719468;
    return days * 86400 + n(11, 2) * 3600 + n(14, 2) * 60 + n(17, 2);
}

std::string wall_time(std::string_view text) {
    std::optional<std::string_view> first, last;
    for (std::size_t start = 0; start < text.size() && !first;) {
        const auto end = std::min(text.find('\n', start), text.size());
        first = timestamp_in(text.substr(start, end - start));
        start = end + 1;
    }
    for (std::size_t end = text.size(); end > 0 && !last;) {  // from the end: a log may be large
        const auto nl = text.rfind('\n', end - 1);
        const auto start = nl == std::string_view::npos ? 0 : nl + 1;
        last = timestamp_in(text.substr(start, end - start));
        end = nl == std::string_view::npos ? 0 : nl;
    }
    if (!first || !last) return "";
    const auto seconds = seconds_of(*last) - seconds_of(*first);
    if (seconds <= 0) return "";
    return fmt::format("{} h {:02} min ({} to {})", seconds / 3600, seconds % 3600 / 60, *first, *last);
}

std::string job_id(std::string_view text, const std::string& log_path) {
    for (const std::string_view key : {"SLURM_JOB_ID", "SLURM_JOBID"}) {
        const auto at = text.find(key);
        if (at == std::string_view::npos) continue;
        auto i = at + key.size();
        while (i < text.size() && (text[i] == '=' || text[i] == ':' || text[i] == ' ')) ++i;
        auto j = i;
        while (j < text.size() && std::isdigit(static_cast<unsigned char>(text[j]))) ++j;
        if (j > i) return std::string(text.substr(i, j - i));
    }
    // slurm-%j.out, %x-%j.out, %x_%j.out, %x.%j.out, an array's %x-%A_%a.out
    static const std::regex name(R"((?:^|.*[-_.])(\d{3,})(?:_\d+)?)");
    std::smatch m;
    const auto stem = std::filesystem::path(log_path).stem().string();
    return std::regex_match(stem, m, name) ? m[1].str() : "";
}

}  // namespace

TrainingProvenance training_provenance(std::string_view log_text, const std::string& log_path) {
    return {std::filesystem::path(log_path).filename().string(), job_id(log_text, log_path), wall_time(log_text)};
}

std::vector<std::string> model_card_arguments(const TrainingProvenance& p) {
    std::vector<std::string> args;
    const std::pair<const char*, const std::string*> fields[] = {
        {"training_log", &p.log_name}, {"training_job_id", &p.job_id}, {"training_wall_time", &p.wall_time}};
    for (const auto& [name, value] : fields)
        if (!value->empty()) args.push_back(std::string("--model-card-field=") + name + "=" + *value);
    return args;
}

}  // namespace m2h::launch
