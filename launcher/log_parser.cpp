#include "log_parser.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <functional>
#include <numeric>
#include <regex>

#include "common/error.hpp"
#include "model/family.hpp"
#include "model/model_spec.hpp"

namespace m2h::launch {
namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    return s;
}

template <typename T>
std::optional<T> to_number(std::string_view s) {
    s = trim(s);
    T v{};
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
    return v;
}

bool contains(std::string_view s, std::string_view what) { return s.find(what) != std::string_view::npos; }

// `-------- arguments --------` and `---- end of arguments ----` (upstream _print_args).
bool is_block_marker(std::string_view line, std::string_view title) {
    line = trim(line);
    const auto pos = line.find(title);
    if (pos == std::string_view::npos || pos == 0 || pos + title.size() >= line.size()) return false;
    const auto dashes = [](std::string_view s) { return !s.empty() && s.find_first_not_of('-') == std::string_view::npos; };
    return dashes(trim(line.substr(0, pos))) && dashes(trim(line.substr(pos + title.size())));
}

}  // namespace

std::string_view strip_rank_prefix(std::string_view line) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.starts_with('[')) {
        const auto close = line.find("]:");
        if (close != std::string_view::npos && line.substr(1, close - 1).find_first_of("[ ") == std::string_view::npos)
            return line.substr(close + 2);
    }
    // srun --label: "12: text"
    std::size_t digits = 0;
    while (digits < line.size() && std::isdigit(static_cast<unsigned char>(line[digits]))) ++digits;
    if (digits > 0 && line.substr(digits).starts_with(": ")) return line.substr(digits + 2);
    return line;
}

TrainingLog parse_training_log(std::string_view text) {
    // The save line's path may contain spaces: take the shortest path after which the line still ends with
    // " in FORMAT format" (or nothing, for Megatron versions that do not print the format).
    static const std::regex save_re(R"(saving checkpoint at iteration\s+(\d+)\s+to\s+(.+?)(?:\s+in\s+(\S+)\s+format)?\s*$)");
    static const std::regex arg_re(R"(^\s+(\S+)\s+\.+(?:\s(.*))?$)");
    static const std::regex vocab_re(R"(padded vocab \(size: \d+\) with \d+ dummy tokens \(new size: (\d+)\))");

    TrainingLog log;
    enum class Block { Before, Inside, After } block = Block::Before;
    std::size_t start = 0;
    while (start <= text.size()) {
        auto end = text.find('\n', start);
        if (end == std::string_view::npos) end = text.size();
        const std::string_view line = strip_rank_prefix(text.substr(start, end - start));
        start = end + 1;

        if (block == Block::Before && is_block_marker(line, "arguments")) {
            block = Block::Inside;
            continue;
        }
        if (block == Block::Inside) {
            if (is_block_marker(line, "end of arguments")) {
                block = Block::After;
                log.has_args_block = true;
                continue;
            }
            std::match_results<std::string_view::const_iterator> m;
            if (std::regex_match(line.begin(), line.end(), m, arg_re))
                log.args.emplace(m[1].str(), std::string(trim(m[2].str())));
            continue;
        }
        if (contains(line, "saving checkpoint at iteration") && !contains(line, "successfully")) {
            std::match_results<std::string_view::const_iterator> m;
            if (std::regex_search(line.begin(), line.end(), m, save_re)) {
                if (auto n = to_number<std::int64_t>(m[1].str()))
                    log.saves.push_back({*n, std::string(trim(m[2].str())), m[3].str()});
            }
            continue;
        }
        if (contains(line, "[after training is done]")) {
            log.finished = true;
            continue;
        }
        if (!log.total_params_billions && contains(line, "Total number of parameters in billions:")) {
            const auto v = line.substr(line.find(':', line.find("billions")) + 1);
            log.total_params_billions = to_number<double>(v);
            continue;
        }
        if (!log.padded_vocab && contains(line, "padded vocab")) {
            std::match_results<std::string_view::const_iterator> m;
            if (std::regex_search(line.begin(), line.end(), m, vocab_re)) log.padded_vocab = to_number<std::uint64_t>(m[1].str());
        }
    }
    // A block that never closed (a truncated log) still tells us what it got to.
    if (block == Block::Inside) log.has_args_block = !log.args.empty();
    return log;
}

namespace {

std::optional<std::string> arg(const TrainingLog& log, const std::string& name) {
    const auto it = log.args.find(name);
    if (it == log.args.end() || it->second == "None" || it->second.empty()) return std::nullopt;
    return it->second;
}

std::optional<std::uint64_t> arg_u64(const TrainingLog& log, const std::string& name) {
    const auto v = arg(log, name);
    return v ? to_number<std::uint64_t>(*v) : std::nullopt;
}

bool arg_true(const TrainingLog& log, const std::string& name, bool fallback) {
    const auto v = arg(log, name);
    return v ? *v == "True" : fallback;
}

int parallel_size(const TrainingLog& log, const std::string& name) {
    const auto v = arg_u64(log, name);
    return v && *v > 0 ? static_cast<int>(*v) : 1;
}

}  // namespace

namespace {

// A value of the arguments block as Megatron printed it (str() of the Namespace attribute), as JSON: True, False,
// None, numbers, tuples and lists of them; anything else is a string.
nlohmann::json python_value(std::string_view v) {
    v = trim(v);
    if (v == "True" || v == "False") return v == "True";
    if (v == "None") return nullptr;
    if (auto i = to_number<std::int64_t>(v)) return *i;
    if (auto d = to_number<double>(v)) return *d;
    if (v.size() >= 2 && ((v.front() == '(' && v.back() == ')') || (v.front() == '[' && v.back() == ']'))) {
        auto items = nlohmann::json::array();
        for (auto rest = v.substr(1, v.size() - 2); !trim(rest).empty();) {
            const auto comma = rest.find(',');
            items.push_back(python_value(rest.substr(0, comma)));
            if (comma == std::string_view::npos) break;
            rest.remove_prefix(comma + 1);
        }
        return items;
    }
    return std::string(v);
}

}  // namespace

std::optional<std::uint64_t> estimate_parameters(const TrainingLog& log) {
    auto args = nlohmann::json::object();
    for (const auto& [name, value] : log.args) args[name] = python_value(value);
    if (log.padded_vocab) args["padded_vocab_size"] = *log.padded_vocab;
    if (!args.contains("padded_vocab_size") && args.contains("vocab_size")) args["padded_vocab_size"] = args["vocab_size"];
    // The engine's own reading of the args and the family's table: what the conversion will write.
    try {
        const auto spec = model::model_spec_from_args(args, {}, "training log");
        std::uint64_t total = 0;
        for (const auto& t : model::hf_tensors(model::family_of(spec.arch), spec))
            total += std::accumulate(t.shape.begin(), t.shape.end(), std::uint64_t{1}, std::multiplies<>());
        return total;
    } catch (const Error&) {
        return std::nullopt;  // a model the engine refuses: the log's own total, if it printed one
    }
}

RunInfo describe_run(const TrainingLog& log, const std::string& log_path) {
    RunInfo run;
    if (!log.saves.empty()) {
        run.checkpoint_root = log.saves.back().path;
        run.root_source = "save line";
        run.format = log.saves.back().format;
    } else if (const auto save = arg(log, "save")) {
        run.checkpoint_root = *save;
        run.root_source = "save argument";
    } else if (!log.has_args_block) {
        throw Error(log_path, "not a Megatron training log: no arguments block and no 'saving checkpoint' line");
    } else {
        throw Error(log_path, "names no checkpoint folder: 'save' is unset and no 'saving checkpoint' line");
    }
    if (run.format.empty()) run.format = arg(log, "ckpt_format").value_or("");
    const std::filesystem::path root(run.checkpoint_root);
    if (root.is_relative())
        run.checkpoint_root = (std::filesystem::path(log_path).parent_path() / root).lexically_normal().string();

    run.tp = parallel_size(log, "tensor_model_parallel_size");
    run.pp = parallel_size(log, "pipeline_model_parallel_size");
    if (const auto v = arg_u64(log, "virtual_pipeline_model_parallel_size"); v && *v > 0) run.vpp = static_cast<int>(*v);

    run.parameters = estimate_parameters(log);
    if (!run.parameters && log.total_params_billions && *log.total_params_billions > 0)
        run.parameters = static_cast<std::uint64_t>(std::llround(*log.total_params_billions * 1e9));
    if (run.parameters) {
        const std::uint64_t bytes_per = arg_true(log, "bf16", false) || arg_true(log, "fp16", false) ? 2 : 4;
        run.model_bytes = *run.parameters * bytes_per;
    }
    return run;
}

}  // namespace m2h::launch
