#include "watch_command.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "common/error.hpp"
#include "common/stop_signal.hpp"
#include "launch_config.hpp"
#include "launch_round.hpp"
#include "local_files.hpp"
#include "submission.hpp"
#include "watch.hpp"

namespace m2h::launch {

namespace {

namespace fs = std::filesystem;

struct WatchOptions {
    std::int64_t interval_s = 600;
    std::optional<std::int64_t> until;
    int max_attempts = 2;
};

std::int64_t now_s() { return static_cast<std::int64_t>(::time(nullptr)); }

WatchOptions read_watch_options(const Settings& s, const LaunchConfig& c) {
    if (c.dry_run) throw Error("--dry-run", "watch submits as it goes; run the launcher itself with --dry-run to see a round");
    WatchOptions w;
    w.interval_s = parse_duration_s(s.get("interval", "10m"), "--interval");
    if (s.has("until")) w.until = parse_until(s.get("until"), now_s());
    w.max_attempts = s.integer("max-attempts").value_or(2);
    if (w.max_attempts < 1) throw Error("--max-attempts", "must be at least 1");
    return w;
}

std::int64_t seconds_since_change(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return 0;
    return now_s() - static_cast<std::int64_t>(st.st_mtime);
}

// Each run of the round: has its training ended (SLURM asked about the jobs its log names), and what of it is
// still to come. The log must be quiet for one interval after its end line where SLURM cannot tell.
// A run whose checkpoint folder does not exist yet has nothing pending, and goes on while its training does.
std::vector<RunProgress> progress_of(const RoundResult& r, const LaunchConfig& c, std::int64_t grace_s) {
    std::vector<std::string> jobs;
    for (const auto& p : r.runs)
        if (const auto id = training_job_of(p.name)) jobs.push_back(*id);
    const SlurmView slurm = jobs.empty() ? SlurmView{} : query_slurm(jobs);
    std::vector<RunProgress> out;
    for (const auto& run : r.runs) {
        const auto planned = std::find_if(r.work.begin(), r.work.end(), [&](const LogPlan& w) { return w.name == run.name; });
        const LogPlan& p = planned == r.work.end() ? run : *planned;
        TrainingObservation o;
        o.end_line = p.finished;
        o.job_id = training_job_of(p.name);
        o.slurm_answered = slurm.squeue_ok;
        if (o.job_id)
            if (const auto st = slurm.states.find(*o.job_id); st != slurm.states.end()) o.job_state = st->second;
        o.log_quiet_s = seconds_since_change(p.log);
        // What this round submitted to SLURM is running now; the local executor has run it already.
        const std::size_t submitted = c.executor == "slurm" ? p.todo.size() : 0;
        out.push_back({p.name, training_state(o, grace_s), p.in_flight + p.saving + submitted});
    }
    return out;
}

std::size_t given_up(const RoundResult& r) {
    std::size_t n = 0;
    for (const auto& p : r.work) n += p.given_up;
    return n;
}

// One round: a launch, then the verdict on the watch.
WatchVerdict watch_round(const Settings& s, const LaunchConfig& c, const WatchOptions& w, std::size_t& failures) {
    const auto r = launch_round(s, c, w.max_attempts);
    log_round(c, r);
    failures += r.tally.failures + given_up(r);
    return watch_verdict(progress_of(r, c, w.interval_s), now_s(), w.until);
}

int finish(const WatchVerdict& v, std::size_t failures) {
    if (failures) {
        spdlog::error("watch over: {}; {} conversion(s) or submission(s) failed (see `megatron2hf-launch status`)", v.why, failures);
        return 1;
    }
    spdlog::info("watch over: {}", v.why);
    return 0;
}

// Sleeps `seconds`, in short steps so that SIGINT/SIGTERM end the watch at once; false when one did.
bool sleep_unless_stopped(std::int64_t seconds) {
    for (std::int64_t i = 0; i < seconds * 10; ++i) {
        if (stop_signal()) return false;
        ::usleep(100'000);
    }
    return !stop_signal();
}

int watch_in_foreground(const Settings& s, const LaunchConfig& c, const WatchOptions& w) {
    install_stop_signals();
    std::size_t failures = 0;
    for (;;) {
        const auto v = watch_round(s, c, w, failures);
        if (v.done) return finish(v, failures);
        spdlog::info("watching: {}; next look in {} s", v.why, w.interval_s);
        if (!sleep_unless_stopped(w.interval_s)) {
            spdlog::warn("watch stopped by {}; what it submitted goes on", signal_name(stop_signal()));
            return 1;
        }
    }
}

// --as-slurm-job: writes the watch job script and submits its first round, unless this folder is watched already.
int submit_watch_job(const Settings& s, const LaunchConfig& c, const WatchOptions& w) {
    if (c.executor != "slurm") throw Error("--as-slurm-job", "needs SLURM: sbatch on PATH, or --executor slurm");
    const auto name = watch_job_name(c.convert_logs_dir);
    if (const auto running = active_job_named(name)) {
        spdlog::info("{} is watched already by job {} ({}); nothing submitted", c.convert_logs_dir, *running, name);
        return 0;
    }
    const auto script = (fs::path(c.convert_logs_dir) / "watch.sbatch").string();
    // The deadline is fixed now: a relative --until must not restart with every round.
    auto args = without_option(without_option(without_option(s.args, "as-slurm-job", false), "until", true), "round", true);
    if (w.until) args.insert(args.end(), {"--until", format_local_time(*w.until)});
    args.insert(args.end(), {"--round", script});
    std::error_code ec;
    fs::create_directories(c.convert_logs_dir, ec);
    if (ec) throw Error(c.convert_logs_dir, "cannot create --convert_logs_dir: " + ec.message());
    const WatchJobSpec spec{name, s.get("account"), s.get("partition"), s.get("qos"), fs::current_path().string(),
                            (exe_dir() / kProgram).string(), args, std::string(kProgram) + " " + M2H_VERSION};
    write_script(script, render_watch_script(spec));
    const auto id = submit_sbatch(script, c.convert_logs_dir, {"--dependency=singleton"});
    spdlog::info("watch job {} submitted ({}): a round every {} s, each submitting the next; logs {}/{}_<job>.out", id, name,
                 w.interval_s, c.convert_logs_dir, name);
    return 0;
}

// --round SCRIPT: what the watch job runs. Submits SCRIPT again to start after the interval unless the watch is over.
int watch_round_in_job(const Settings& s, const LaunchConfig& c, const WatchOptions& w) {
    std::size_t failures = 0;
    const auto v = watch_round(s, c, w, failures);
    if (v.done) return finish(v, failures);
    const auto script = s.get("round");
    const auto id = submit_sbatch(script, c.convert_logs_dir,
                                  {"--begin=now+" + std::to_string(w.interval_s), "--dependency=singleton"});
    spdlog::info("watching: {}; next round is job {}, in {} s", v.why, id, w.interval_s);
    return 0;
}

}  // namespace

int run_watch(const Settings& s) {
    const auto c = read_launch_config(s);
    const auto w = read_watch_options(s, c);
    if (s.flag("as-slurm-job")) return submit_watch_job(s, c, w);
    if (s.has("round")) return watch_round_in_job(s, c, w);
    return watch_in_foreground(s, c, w);
}

}  // namespace m2h::launch
