#include "job_script.hpp"

#include <algorithm>

#include "common/error.hpp"

namespace m2h::launch {

std::string shell_quote(std::string_view s) {
    std::string out = "'";
    for (char c : s) {
        if (c == '\'')
            out += "'\\''";
        else
            out += c;
    }
    out += "'";
    return out;
}

std::string shell_words(const std::vector<std::string>& words) {
    std::string out;
    for (const auto& w : words) {
        if (!out.empty()) out += ' ';
        out += shell_quote(w);
    }
    return out;
}

bool is_sbatch_token(std::string_view s) {
    if (s.empty()) return false;
    return std::all_of(s.begin(), s.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               std::string_view("._-:+@,=%[]").find(c) != std::string_view::npos;
    });
}

Resources size_resources(std::optional<std::uint64_t> model_bytes, const ResourceRequest& r) {
    if (r.memory_budget == 0) throw Error("--memory-budget", "must be positive");
    if (r.max_ranks < 1) throw Error("--max-ranks", "must be at least 1");
    if (r.nodes && *r.nodes < 1) throw Error("--nodes", "must be at least 1");
    if (r.ntasks_per_node && *r.ntasks_per_node < 1) throw Error("--ntasks-per-node", "must be at least 1");
    std::uint64_t wanted = 1;
    if (model_bytes && *model_bytes > 0) {
        const std::uint64_t per_round = std::max<std::uint64_t>(1, r.memory_budget / 3);
        wanted = (*model_bytes + per_round - 1) / per_round;
    }
    const int ranks = static_cast<int>(std::clamp<std::uint64_t>(wanted, 1, static_cast<std::uint64_t>(r.max_ranks)));
    Resources out;
    out.nodes = r.nodes.value_or(1);
    out.ntasks_per_node = r.ntasks_per_node.value_or((ranks + out.nodes - 1) / out.nodes);
    if (r.mem == "auto") {
        const std::uint64_t per_rank = r.memory_budget + (512ull << 20);
        const std::uint64_t mib = (per_rank * static_cast<std::uint64_t>(out.ntasks_per_node) + (1ull << 20) - 1) >> 20;
        out.mem = std::to_string(mib) + "M";
    } else if (r.mem != "none") {
        out.mem = r.mem;
    }
    return out;
}

std::string array_spec(std::size_t tasks, int max_parallel) {
    std::string s = tasks <= 1 ? "0" : "0-" + std::to_string(tasks - 1);
    if (max_parallel > 0) s += "%" + std::to_string(max_parallel);
    return s;
}

std::string sbatch_line(const std::string& option, const std::string& value) {
    if (value.empty()) return "";
    if (!is_sbatch_token(value))
        throw Error("--" + option, "'" + value + "' is not a plain SLURM value (letters, digits and ._-:+@,=%[] only)");
    return "#SBATCH --" + option + "=" + value + "\n";
}

std::string sbatch_directives(const JobSpec& spec) {
    std::string out;
    const auto line = [&](const std::string& option, const std::string& value) { out += sbatch_line(option, value); };
    line("job-name", spec.job_name);
    line("account", spec.account);
    line("partition", spec.partition);
    line("qos", spec.qos);
    line("nodes", std::to_string(spec.resources.nodes));
    line("ntasks-per-node", std::to_string(spec.resources.ntasks_per_node));
    line("cpus-per-task", "1");
    line("mem", spec.resources.mem);
    line("time", spec.time);
    line("array", array_spec(spec.inputs.size(), spec.max_parallel));
    // SIGUSR1 to the job steps 60 s before the time limit: the engine stops at once and removes its partial
    // output, instead of being killed mid-write 30 s after SLURM's SIGTERM.
    line("signal", "USR1@60");
    // A node of the allocation failing (or preemption) would otherwise put the task back in the queue behind the
    // launcher's back, where it waits for nodes and then runs again as it was submitted: `status` would say
    // queued and the next launch would skip it. It ends NODE_FAIL instead; `status` says failed, and the next
    // launch (or `watch`, within --max-attempts) resubmits it. --sbatch-arg=--requeue (the command line wins over
    // the script's lines) restores SLURM's default.
    out += "#SBATCH --no-requeue\n";
    // Relative to the job's working directory, which the launcher sets to <convert_logs_dir>: no path from
    // the command line has to be written (unquotable) into an #SBATCH line.
    out += "#SBATCH --output=%x_%A_%a.out\n";
    out += "#SBATCH --error=%x_%A_%a.err";
    return out;
}

std::string render_template(std::string_view text, const std::map<std::string, std::string>& values,
                            const std::string& template_name) {
    std::string out;
    out.reserve(text.size() + 1024);
    std::size_t pos = 0;
    while (true) {
        const auto open = text.find("{{", pos);
        if (open == std::string_view::npos) {
            out += text.substr(pos);
            return out;
        }
        out += text.substr(pos, open - pos);
        const auto close = text.find("}}", open + 2);
        const auto line_end = text.find('\n', open);
        if (close == std::string_view::npos || (line_end != std::string_view::npos && close > line_end))
            throw Error(template_name, "unterminated placeholder at byte " + std::to_string(open));
        const std::string name(text.substr(open + 2, close - open - 2));
        const auto it = values.find(name);
        if (it == values.end()) {
            std::string known;
            for (const auto& [k, v] : values) known += (known.empty() ? "" : ", ") + k;
            throw Error(template_name, "unknown placeholder {{" + name + "}} (known: " + known + ")");
        }
        out += it->second;
        pos = close + 2;
    }
}

std::map<std::string, std::string> script_placeholders(const JobSpec& spec) {
    if (spec.inputs.size() != spec.iterations.size() || spec.inputs.size() != spec.outputs.size() || spec.inputs.empty())
        throw Error("job script", "inputs, iterations and outputs must be non-empty and of equal length");
    // The header comment must stay one comment line whatever the generator string holds.
    std::string generator = spec.generator;
    for (char& c : generator)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    return {
        {"GENERATED", "# Generated by " + generator + ". Submit it from its own folder (the launcher does)."},
        {"SBATCH", sbatch_directives(spec)},
        {"LOG", shell_quote(spec.log)},
        {"CHECKPOINT_ROOT", shell_quote(spec.checkpoint_root)},
        {"ENGINE", shell_quote(spec.engine)},
        {"ENGINE_ARGS", shell_words(spec.engine_args)},
        {"ASSETS", shell_quote(spec.assets)},
        {"CONTAINER_IMAGE", shell_quote(spec.container_image)},
        {"BINDS", shell_words(spec.binds)},
        {"MPI", shell_quote(spec.mpi)},
        {"MPI_LAUNCHER", shell_quote(spec.mpi_launcher)},
        {"NTASKS", shell_quote(std::to_string(spec.resources.ranks()))},
        {"INPUTS", shell_words(spec.inputs)},
        {"ITERATIONS", shell_words(spec.iterations)},
        {"OUTPUTS", shell_words(spec.outputs)},
    };
}

std::string render_job_script(std::string_view template_text, const std::string& template_name, const JobSpec& spec) {
    return render_template(template_text, script_placeholders(spec), template_name);
}

}  // namespace m2h::launch
