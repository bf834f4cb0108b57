#include "watch.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <ctime>
#include <set>

#include "common/error.hpp"
#include "job_script.hpp"

namespace m2h::launch {

namespace {

bool all_digits(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

std::optional<std::int64_t> to_int(std::string_view s) {
    std::int64_t n = 0;
    const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
    return n;
}

// SLURM states in which a job still runs or will run.
bool job_active(const std::string& state) {
    static const std::set<std::string> active{"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED",
                                              "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING",
                                              "STAGE_OUT", "POWER_UP_NODE", "RESV_DEL_HOLD"};
    return active.count(state) > 0;
}

}  // namespace

std::int64_t parse_duration_s(std::string_view text, const std::string& option) {
    const auto bad = [&] { return Error(option, "expected a duration such as 90s, 10m, 2h or 1d, got '" + std::string(text) + "'"); };
    if (text.empty()) throw bad();
    std::int64_t unit = 1;
    switch (text.back()) {
        case 's': unit = 1; break;
        case 'm': unit = 60; break;
        case 'h': unit = 3600; break;
        case 'd': unit = 86400; break;
        default:
            if (!std::isdigit(static_cast<unsigned char>(text.back()))) throw bad();
    }
    if (!std::isdigit(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
    const auto n = all_digits(text) ? to_int(text) : std::nullopt;
    if (!n || *n < 1 || *n > 3650 * 86400 / unit) throw bad();
    return *n * unit;
}

std::int64_t parse_until(std::string_view text, std::int64_t now) {
    if (text.find('-') == std::string_view::npos) return now + parse_duration_s(text, "--until");
    std::tm tm{};
    const std::string s(text);
    const char* end = ::strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end || *end) {
        tm = {};
        end = ::strptime(s.c_str(), "%Y-%m-%dT%H:%M", &tm);
    }
    if (!end || *end) throw Error("--until", "expected YYYY-MM-DDTHH:MM[:SS] or a duration such as 12h, got '" + s + "'");
    tm.tm_isdst = -1;
    return static_cast<std::int64_t>(std::mktime(&tm));
}

std::string format_local_time(std::int64_t unix_s) {
    const auto t = static_cast<std::time_t>(unix_s);
    std::tm tm{};
    ::localtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    return buf;
}

std::optional<std::string> training_job_of(std::string_view log_name) {
    const auto sep = log_name.find_last_of("_-");
    if (sep == std::string_view::npos) return std::nullopt;
    const auto id = log_name.substr(sep + 1);
    if (!all_digits(id) || id.size() > 12) return std::nullopt;
    return std::string(id);
}

TrainingState training_state(const TrainingObservation& o, std::int64_t grace_s) {
    if (o.job_id && o.slurm_answered) {
        if (!o.job_state) return {true, "job " + *o.job_id + " is no longer in SLURM's queue"};
        if (!job_active(*o.job_state)) return {true, "job " + *o.job_id + " " + *o.job_state};
        return {false, "job " + *o.job_id + " " + *o.job_state};
    }
    if (!o.end_line) return {false, "no end-of-training line in its log yet"};
    if (o.log_quiet_s < grace_s)
        return {false, "its log says training is done; waiting for the final save (log quiet for " +
                           std::to_string(o.log_quiet_s) + " of " + std::to_string(grace_s) + " s)"};
    return {true, "its log says training is done and has been quiet for " + std::to_string(o.log_quiet_s) + " s"};
}

WatchVerdict watch_verdict(const std::vector<RunProgress>& runs, std::int64_t now, std::optional<std::int64_t> until) {
    if (until && now >= *until) return {true, "--until " + format_local_time(*until) + " reached"};
    for (const auto& r : runs) {
        if (!r.training.ended) return {false, r.name + ": training goes on (" + r.training.why + ")"};
        if (r.pending) return {false, r.name + ": " + std::to_string(r.pending) + " iteration(s) still to convert"};
    }
    return {true, runs.empty() ? "no training run to watch" : "every training run has ended and is converted"};
}

std::vector<std::string> without_option(const std::vector<std::string>& args, std::string_view name, bool takes_value) {
    const std::string flag = "--" + std::string(name);
    std::vector<std::string> out;
    for (std::size_t i = 0; i < args.size(); ++i) {
        if (args[i] == flag) {
            if (takes_value) ++i;
            continue;
        }
        if (takes_value && args[i].starts_with(flag + "=")) continue;
        out.push_back(args[i]);
    }
    return out;
}

std::string watch_job_name(std::string_view convert_logs_dir) {
    std::uint32_t h = 2166136261u;  // FNV-1a: the same name from every build and machine
    for (const unsigned char c : convert_logs_dir) h = (h ^ c) * 16777619u;
    static const char* hex = "0123456789abcdef";
    std::string name = "m2h-watch-";
    for (int shift = 28; shift >= 0; shift -= 4) name += hex[(h >> shift) & 0xf];
    return name;
}

std::string render_watch_script(const WatchJobSpec& spec) {
    std::string s = "#!/bin/bash\n# Generated by " + spec.generator +
                    ": one round of `megatron2hf-launch watch`, which submits\n"
                    "# this script again (--begin, --dependency=singleton) until the watched training runs have ended and\n"
                    "# every checkpoint of theirs is converted.\n";
    s += sbatch_line("job-name", spec.job_name);
    s += sbatch_line("account", spec.account);
    s += sbatch_line("partition", spec.partition);
    s += sbatch_line("qos", spec.qos);
    s += sbatch_line("ntasks", "1");
    s += sbatch_line("cpus-per-task", "1");
    s += sbatch_line("mem", "1G");
    s += sbatch_line("time", "00:30:00");
    s += sbatch_line("output", "%x_%j.out");
    s += "set -euo pipefail\ncd " + shell_quote(spec.cwd) + "\nexec " + shell_quote(spec.launcher) + " watch " +
         shell_words(spec.args) + "\n";
    return s;
}

}  // namespace m2h::launch
