#include "state_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/error.hpp"

namespace m2h::launch {
using nlohmann::json;

std::string state_file_path(const std::string& convert_logs_dir) {
    return (std::filesystem::path(convert_logs_dir) / "megatron2hf-launch.jsonl").string();
}

std::string record_to_line(const SubmissionRecord& r) {
    json tasks = json::array();
    for (const auto& t : r.tasks) {
        json j{{"task", t.task}, {"iteration", t.iteration}, {"input", t.input}, {"output", t.output}};
        if (t.exit_code) j["exit_code"] = *t.exit_code;
        if (!t.then_job.empty()) j["then_job"] = t.then_job;
        if (t.then_exit_code) j["then_exit_code"] = *t.then_exit_code;
        tasks.push_back(std::move(j));
    }
    json j{{"version", 1}, {"time", r.time}, {"executor", r.executor}, {"job_id", r.job_id}, {"log", r.log},
                 {"log_name", r.log_name}, {"checkpoint_root", r.checkpoint_root}, {"format", r.format},
                 {"script", r.script}, {"job_name", r.job_name}, {"tasks", tasks}};
    if (!r.then_script.empty()) j["then_script"] = r.then_script;
    // Invalid UTF-8 in a path must not make the record unwritable.
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

SubmissionRecord record_from_line(const std::string& line) {
    try {
        const auto j = json::parse(line);
        SubmissionRecord r;
        r.time = j.value("time", "");
        r.executor = j.at("executor").get<std::string>();
        r.job_id = j.at("job_id").get<std::string>();
        r.log = j.value("log", "");
        r.log_name = j.at("log_name").get<std::string>();
        r.checkpoint_root = j.value("checkpoint_root", "");
        r.format = j.value("format", "");
        r.script = j.value("script", "");
        r.job_name = j.value("job_name", "convert_full");
        r.then_script = j.value("then_script", "");
        for (const auto& t : j.at("tasks")) {
            TaskRecord tr;
            tr.task = t.at("task").get<std::size_t>();
            tr.iteration = t.at("iteration").get<std::string>();
            tr.input = t.value("input", "");
            tr.output = t.at("output").get<std::string>();
            if (t.contains("exit_code")) tr.exit_code = t.at("exit_code").get<int>();
            tr.then_job = t.value("then_job", "");
            if (t.contains("then_exit_code")) tr.then_exit_code = t.at("then_exit_code").get<int>();
            r.tasks.push_back(std::move(tr));
        }
        return r;
    } catch (const json::exception& e) {
        throw Error("state record", e.what());
    }
}

void append_record(const std::string& path, const SubmissionRecord& r) {
    std::string line = record_to_line(r) + "\n";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) throw Error(path, std::string("cannot open the state file: ") + std::strerror(errno));
    // A line cut by a crash or a full disk must not swallow this record: start on a fresh line.
    if (const off_t size = ::lseek(fd, 0, SEEK_END); size > 0) {
        char last = '\n';
        if (::pread(fd, &last, 1, size - 1) == 1 && last != '\n') line.insert(line.begin(), '\n');
    }
    const auto n = ::write(fd, line.data(), line.size());
    const int e = errno;
    ::close(fd);
    if (n != static_cast<ssize_t>(line.size()))
        throw Error(path, std::string("cannot append to the state file: ") + (n < 0 ? std::strerror(e) : "short write"));
}

std::vector<SubmissionRecord> load_records(const std::string& path) {
    std::vector<SubmissionRecord> records;
    std::ifstream in(path);
    if (!in) return records;
    std::string line;
    for (std::size_t number = 1; std::getline(in, line); ++number) {
        if (line.empty()) continue;
        try {
            records.push_back(record_from_line(line));
        } catch (const Error& e) {
            spdlog::warn("{}:{}: ignoring an unreadable record ({})", path, number, e.what());
        }
    }
    return records;
}

std::string utc_now_iso() {
    const auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

}  // namespace m2h::launch
