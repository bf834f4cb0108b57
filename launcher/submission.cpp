#include "submission.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>

#include "common/error.hpp"

extern char** environ;

namespace m2h::launch {
namespace fs = std::filesystem;
namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    return s;
}

bool all_digits(std::string_view s) { return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos; }

std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> parts;
    std::size_t start = 0;
    while (true) {
        const auto end = s.find(sep, start);
        parts.push_back(s.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
        if (end == std::string_view::npos) return parts;
        start = end + 1;
    }
}

template <typename F>
void for_each_line(std::string_view text, F f) {
    for (auto line : split(text, '\n')) {
        line = trim(line);
        if (!line.empty()) f(line);
    }
}

// The child's environment: ours, minus unset_env, plus set_env.
std::vector<std::string> child_environment(const CommandOptions& o) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
        const std::string_view kv(*e);
        const auto name = kv.substr(0, kv.find('='));
        bool drop = o.set_env.count(std::string(name)) > 0;
        for (const auto& u : o.unset_env) drop = drop || name == u;
        if (!drop) env.emplace_back(kv);
    }
    for (const auto& [k, v] : o.set_env) env.push_back(k + "=" + v);
    return env;
}

}  // namespace

CommandResult run_command(const std::vector<std::string>& argv, const CommandOptions& o) {
    CommandResult r;
    if (argv.empty()) throw Error("run_command", "empty argv");
    // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
    std::vector<std::string> env = child_environment(o);
    std::vector<char*> cargv, cenv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    for (auto& e : env) cenv.push_back(e.data());
    cenv.push_back(nullptr);
    std::string program = argv[0];
    if (program.find('/') == std::string::npos) {
        const auto found = find_on_path(program);
        if (!found) {
            r.not_found = true;
            r.exit_code = 127;
            r.err = program + ": not found on PATH";
            return r;
        }
        program = *found;
    }

    int out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
    const bool capture_out = o.stdout_file.empty(), capture_err = o.stderr_file.empty();
    int out_fd = -1, err_fd = -1;
    if (!capture_out && (out_fd = ::open(o.stdout_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
        throw Error(o.stdout_file, std::string("cannot create: ") + std::strerror(errno));
    if (!capture_err && (err_fd = ::open(o.stderr_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
        throw Error(o.stderr_file, std::string("cannot create: ") + std::strerror(errno));
    if ((capture_out && ::pipe2(out_pipe, O_CLOEXEC) != 0) || (capture_err && ::pipe2(err_pipe, O_CLOEXEC) != 0))
        throw Error(argv[0], std::string("pipe: ") + std::strerror(errno));
    int exec_pipe[2];  // reports an exec failure (errno) back to the parent
    if (::pipe2(exec_pipe, O_CLOEXEC) != 0) throw Error(argv[0], std::string("pipe: ") + std::strerror(errno));

    const pid_t pid = ::fork();
    if (pid < 0) throw Error(argv[0], std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
        ::setpgid(0, 0);  // its own process group, so a timeout can stop everything it started
        const int devnull = ::open("/dev/null", O_RDONLY);
        if (devnull >= 0) ::dup2(devnull, 0);
        ::dup2(capture_out ? out_pipe[1] : out_fd, 1);
        ::dup2(capture_err ? err_pipe[1] : err_fd, 2);
        if (!o.cwd.empty() && ::chdir(o.cwd.c_str()) != 0) {
            const int e = errno;
            (void)!::write(exec_pipe[1], &e, sizeof e);
            ::_exit(127);
        }
        ::execve(program.c_str(), cargv.data(), cenv.data());
        const int e = errno;
        (void)!::write(exec_pipe[1], &e, sizeof e);
        ::_exit(127);
    }
    ::close(exec_pipe[1]);
    if (capture_out) ::close(out_pipe[1]);
    if (capture_err) ::close(err_pipe[1]);
    if (out_fd >= 0) ::close(out_fd);
    if (err_fd >= 0) ::close(err_fd);

    int child_errno = 0;
    if (::read(exec_pipe[0], &child_errno, sizeof child_errno) == sizeof child_errno) {
        r.not_found = child_errno == ENOENT;
        r.err = argv[0] + ": cannot run: " + std::strerror(child_errno) + (o.cwd.empty() ? "" : " (in " + o.cwd + ")");
    }
    ::close(exec_pipe[0]);

    const auto start = std::chrono::steady_clock::now();
    const auto check_timeout = [&] {
        const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (o.timeout_s > 0 && elapsed > o.timeout_s && !r.timed_out) {
            r.timed_out = true;
            ::kill(-pid, SIGTERM);
            ::usleep(200000);
            ::kill(-pid, SIGKILL);
        }
    };
    // Read both pipes until the child (and anything it left holding them) closes them.
    std::vector<pollfd> fds;
    if (capture_out) fds.push_back({out_pipe[0], POLLIN, 0});
    if (capture_err) fds.push_back({err_pipe[0], POLLIN, 0});
    while (std::any_of(fds.begin(), fds.end(), [](const pollfd& f) { return f.fd >= 0; })) {
        check_timeout();
        if (::poll(fds.data(), fds.size(), 100) <= 0) continue;
        for (auto& f : fds) {
            if (f.fd < 0 || !(f.revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[8192];
            const auto n = ::read(f.fd, buf, sizeof buf);
            if (n > 0) {
                (capture_out && f.fd == out_pipe[0] ? r.out : r.err).append(buf, static_cast<std::size_t>(n));
            } else if (n == 0 || errno != EINTR) {
                ::close(f.fd);
                f.fd = -1;  // poll ignores negative descriptors
            }
        }
    }
    int status = 0;
    for (pid_t w; (w = ::waitpid(pid, &status, WNOHANG)) != pid;) {
        if (w < 0 && errno != EINTR) throw Error(argv[0], std::string("waitpid: ") + std::strerror(errno));
        check_timeout();
        ::usleep(20000);
    }
    if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
    else if (WIFSIGNALED(status)) r.exit_code = 128 + WTERMSIG(status);
    return r;
}

std::optional<std::string> find_on_path(const std::string& name) {
    const char* path = std::getenv("PATH");
    if (!path || name.empty()) return std::nullopt;
    for (auto dir : split(path, ':')) {
        if (dir.empty()) dir = ".";
        const auto candidate = (fs::path(dir) / name).string();
        struct stat st {};
        if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(candidate.c_str(), X_OK) == 0)
            return candidate;
    }
    return std::nullopt;
}

std::optional<std::string> parse_sbatch_parsable(std::string_view out) {
    out = trim(out);
    // Only the last line: site plugins sometimes print notices before the id.
    if (const auto nl = out.rfind('\n'); nl != std::string_view::npos) out = trim(out.substr(nl + 1));
    const auto id = out.substr(0, out.find(';'));
    if (!all_digits(id)) return std::nullopt;
    return std::string(id);
}

std::string submit_sbatch(const std::string& script, const std::string& dir, const std::vector<std::string>& extra_args,
                          const std::vector<std::string>& script_args, const std::map<std::string, std::string>& env) {
    std::vector<std::string> argv{"sbatch", "--parsable", "--chdir=" + dir};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    argv.push_back(script);
    argv.insert(argv.end(), script_args.begin(), script_args.end());
    CommandOptions o;
    o.cwd = dir;
    o.set_env = env;
    o.timeout_s = 120;
    const auto r = run_command(argv, o);
    auto message = std::string(trim(r.err.empty() ? r.out : r.err));
    if (const auto nl = message.find('\n'); nl != std::string::npos) message = message.substr(0, nl) + " ...";
    if (r.timed_out) throw Error(script, "sbatch did not answer within 120 s");
    if (r.exit_code != 0) throw Error(script, "sbatch failed (exit " + std::to_string(r.exit_code) + "): " + message);
    const auto id = parse_sbatch_parsable(r.out);
    if (!id) throw Error(script, "sbatch printed no job id: '" + std::string(trim(r.out)) + "'");
    return *id;
}

JobStates parse_squeue(std::string_view out, JobStates* reasons) {
    JobStates s;
    for_each_line(out, [&](std::string_view line) {
        const auto f = split(line, '|');
        if (f.size() < 3 || !all_digits(trim(f[0]))) return;
        const auto job = trim(f[0]), task = trim(f[1]);
        const std::string key = all_digits(task) ? std::string(job) + "_" + std::string(task) : std::string(job);
        s[key] = std::string(trim(f[2]));
        if (reasons && f.size() > 3) (*reasons)[key] = std::string(trim(f[3]));
    });
    return s;
}

JobStates parse_sacct(std::string_view out) {
    JobStates s;
    for_each_line(out, [&](std::string_view line) {
        const auto f = split(line, '|');
        if (f.size() < 2) return;
        const auto id = trim(f[0]);
        auto state = trim(f[1]);
        state = state.substr(0, state.find(' '));  // "CANCELLED by 0"
        const auto us = id.find('_');
        const auto job = id.substr(0, us);
        if (!all_digits(job)) return;
        if (us == std::string_view::npos) {
            s[std::string(job)] = std::string(state);
            return;
        }
        auto tasks = id.substr(us + 1);
        if (all_digits(tasks)) {
            s[std::string(job) + "_" + std::string(tasks)] = std::string(state);
            return;
        }
        // "[5-9]" or "[1,3-4%2]": a pending remainder of the array.
        if (tasks.starts_with('[') && tasks.ends_with(']')) tasks = tasks.substr(1, tasks.size() - 2);
        tasks = tasks.substr(0, tasks.find('%'));
        for (auto range : split(tasks, ',')) {
            const auto dash = range.find('-');
            const auto a = range.substr(0, dash), b = dash == std::string_view::npos ? a : range.substr(dash + 1);
            if (!all_digits(a) || !all_digits(b)) continue;
            const long lo = std::stol(std::string(a)), hi = std::stol(std::string(b));
            for (long t = lo; t <= hi && t - lo < 100000; ++t) s[std::string(job) + "_" + std::to_string(t)] = std::string(state);
        }
    });
    return s;
}

namespace {

std::string current_user() {
    if (const passwd* pw = ::getpwuid(::geteuid())) return pw->pw_name;
    return "";
}

}  // namespace

std::optional<std::string> active_job_named(const std::string& name) {
    std::vector<std::string> squeue{"squeue", "-h", "--name=" + name, "-o", "%i"};
    if (const auto user = current_user(); !user.empty()) squeue.push_back("--user=" + user);
    CommandOptions o;
    o.timeout_s = 60;
    const auto r = run_command(squeue, o);
    if (r.exit_code != 0 || r.timed_out) throw Error("squeue", "cannot list jobs named " + name + ": " + std::string(trim(r.err)));
    const auto id = trim(std::string_view(r.out).substr(0, r.out.find('\n')));
    if (id.empty()) return std::nullopt;
    return std::string(id);
}

SlurmView query_slurm(const std::vector<std::string>& job_ids) {
    SlurmView v;
    if (job_ids.empty()) return v;
    const std::set<std::string> wanted(job_ids.begin(), job_ids.end());
    // squeue -j fails as a whole when one id is no longer known, so ask for this user's jobs and filter.
    const std::string user = current_user();
    std::vector<std::string> squeue{"squeue", "-h", "-r", "-t", "all", "-o", "%F|%K|%T|%r"};
    if (!user.empty()) squeue.push_back("--user=" + user);
    CommandOptions o;
    o.timeout_s = 60;
    if (const auto r = run_command(squeue, o); r.exit_code == 0 && !r.timed_out) {
        v.squeue_ok = true;
        JobStates reasons;
        for (const auto& [key, state] : parse_squeue(r.out, &reasons)) {
            if (!wanted.count(key.substr(0, key.find('_')))) continue;
            v.states[key] = state;
            if (const auto it = reasons.find(key); it != reasons.end()) v.reasons[key] = it->second;
        }
    }
    std::string ids;
    for (const auto& id : wanted) ids += (ids.empty() ? "" : ",") + id;
    if (const auto r = run_command({"sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ids}, o); r.exit_code == 0 && !r.timed_out) {
        v.sacct_ok = true;
        // slurmctld's view is the fresher one; sacct fills in jobs it has forgotten.
        for (const auto& [key, state] : parse_sacct(r.out)) v.states.emplace(key, state);
    }
    return v;
}

}  // namespace m2h::launch
