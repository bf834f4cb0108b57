// megatron2hf-launch: training logs → one SLURM job array per log, one array task per checkpoint iteration,
// each running the megatron2hf engine under srun. Also `megatron2hf-launch status`.
//
// This file is the thin shell: command line, profile, files and processes. Everything it decides with is in
// the pure parts (log_parser, iteration_discovery, job_script, status), which are unit-tested.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include <cxxopts.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "common/byte_size.hpp"
#include "common/error.hpp"
#include "iteration_discovery.hpp"
#include "job_script.hpp"
#include "log_parser.hpp"
#include "log_selection.hpp"
#include "outputs.hpp"
#include "profile.hpp"
#include "state_file.hpp"
#include "status.hpp"
#include "submission.hpp"

#ifndef M2H_SOURCE_DIR
#define M2H_SOURCE_DIR ""
#endif

namespace {

namespace fs = std::filesystem;
using m2h::Error;
using namespace m2h::launch;

constexpr const char* kProgram = "megatron2hf-launch";

// ------------------------------------------------------------------------------------------------------------
// Settings: command line > profile > default
// ------------------------------------------------------------------------------------------------------------

enum class Kind { Value, Flag, List };
struct OptionDef {
    const char* name;
    const char* help;
    Kind kind;
    bool in_profile;  // may a profile set it?
};

// The nine original arguments keep their underscore spelling; new options use dashes.
const std::vector<OptionDef> kOptions = {
    {"account", "SLURM account", Kind::Value, true},
    {"partition", "SLURM partition", Kind::Value, true},
    {"convert_logs_dir", "where job scripts, job logs and the state file go", Kind::Value, true},
    {"container_image", "run the engine inside this image (apptainer/singularity, or pyxis with --template pyxis)", Kind::Value, true},
    {"opensci_megatron_path", "accepted for compatibility; not needed by megatron2hf", Kind::Value, true},
    {"megatron_path", "accepted for compatibility; not needed by megatron2hf", Kind::Value, true},
    {"open_sci_hf_path", "Open-Sci-hf checkout: modeling, configuration and tokenizer files of its sample/ are copied into each output", Kind::Value, true},
    {"train_logs_dir_or_path", "training log(s): a folder of *.out, one file, or a::b::c", Kind::Value, false},
    {"save_checkpoints_dir", "output root: <dir>/<log name>/hf/iter_%07d/", Kind::Value, true},
    {"iterations", "latest, all (default) or N[,N...]", Kind::Value, true},
    {"iters", "same as --iterations (the per-iteration workflow's name)", Kind::Value, false},
    {"executor", "slurm or local (default: slurm when sbatch is on PATH)", Kind::Value, true},
    {"dry-run", "write the job scripts, submit and run nothing", Kind::Flag, false},
    {"template", "job script template: bare, apptainer, pyxis or a file path", Kind::Value, true},
    {"nodes", "nodes per conversion (default 1)", Kind::Value, true},
    {"ntasks-per-node", "engine ranks per node (default: sized from the model and --memory-budget)", Kind::Value, true},
    {"max-ranks", "upper bound for the sized rank count (default 16)", Kind::Value, true},
    {"memory-budget", "per-rank exchange memory given to the engine (default 1GiB)", Kind::Value, true},
    {"mem", "#SBATCH --mem: auto (budget + 512 MiB per rank), none, or a SLURM size", Kind::Value, true},
    {"time", "#SBATCH --time (default 01:00:00)", Kind::Value, true},
    {"qos", "#SBATCH --qos", Kind::Value, true},
    {"job-name", "#SBATCH --job-name (default convert_full)", Kind::Value, true},
    {"max-parallel-jobs", "array throttle: at most this many tasks of one array at once (default: no limit)", Kind::Value, true},
    {"max-array-size", "largest array per submission; more iterations are split (default 1000)", Kind::Value, true},
    {"mpi", "srun --mpi value (default pmix; 'default' leaves it to the cluster)", Kind::Value, true},
    {"mpi-launcher", "srun (default) or mpirun, inside the allocation", Kind::Value, true},
    {"engine", "megatron2hf binary (default: next to this program; 'megatron2hf' inside a container)", Kind::Value, true},
    {"engine-arg", "extra engine argument, repeatable (e.g. --engine-arg=--dtype=bf16)", Kind::List, true},
    {"sbatch-arg", "extra sbatch argument, repeatable (e.g. --sbatch-arg=--gres=gpu:0)", Kind::List, true},
    {"profile", "cluster defaults: a JSON file, or a name in configs/profiles/", Kind::Value, false},
    {"format", "status output: table (default) or json", Kind::Value, false},
};

enum class Command { Launch, Status, Clean };

struct Settings {
    Command command = Command::Launch;
    std::map<std::string, std::string> values;             // canonical name → value
    std::map<std::string, std::vector<std::string>> lists;  // canonical name → values
    std::set<std::string> flags;
    std::string profile_file;

    std::string get(const std::string& name, const std::string& fallback = "") const {
        const auto it = values.find(canonical_option_name(name));
        return it == values.end() ? fallback : it->second;
    }
    bool has(const std::string& name) const { return values.count(canonical_option_name(name)) > 0; }
    bool flag(const std::string& name) const { return flags.count(name) > 0; }
    std::vector<std::string> list(const std::string& name) const {
        const auto it = lists.find(name);
        return it == lists.end() ? std::vector<std::string>{} : it->second;
    }
    std::optional<int> integer(const std::string& name) const {
        if (!has(name)) return std::nullopt;
        const auto v = get(name);
        try {
            std::size_t used = 0;
            const int n = std::stoi(v, &used);
            if (used == v.size()) return n;
        } catch (const std::exception&) {
        }
        throw Error("--" + name, "expected a whole number, got '" + v + "'");
    }
};

fs::path exe_dir() {
    std::error_code ec;
    const auto self = fs::read_symlink("/proc/self/exe", ec);
    return ec ? fs::current_path() : self.parent_path();
}

// Where sbatch/ and configs/ live: beside the build tree (build/bin/../../), an install (bin/../share/), or
// the source tree this binary was built from.
std::vector<std::string> data_dirs(const std::string& sub) {
    std::vector<std::string> dirs;
    std::error_code ec;
    for (const auto& base : {exe_dir() / ".." / "..", exe_dir() / ".." / "share" / "megatron2hf", fs::path(M2H_SOURCE_DIR)}) {
        if (base.empty()) continue;
        const auto d = (base / sub).lexically_normal();
        if (fs::is_directory(d, ec) && std::find(dirs.begin(), dirs.end(), d.string()) == dirs.end()) dirs.push_back(d.string());
    }
    return dirs;
}

std::string read_file(const std::string& path, const std::string& what) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path, "cannot read " + what);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

std::optional<Settings> parse_settings(int argc, char** argv) {
    Settings s;
    std::vector<char*> args(argv, argv + argc);
    if (args.size() > 1 && (std::string(args[1]) == "status" || std::string(args[1]) == "clean")) {
        s.command = std::string(args[1]) == "status" ? Command::Status : Command::Clean;
        args.erase(args.begin() + 1);
    }
    cxxopts::Options spec(kProgram,
                          "Turns Megatron-LM training logs into SLURM job arrays that convert every checkpoint iteration "
                          "with megatron2hf.\n  megatron2hf-launch --convert_logs_dir D --train_logs_dir_or_path L "
                          "--save_checkpoints_dir S [options]\n  megatron2hf-launch status --convert_logs_dir D [...]\n  "
                          "megatron2hf-launch clean --convert_logs_dir D [...]: remove what killed conversions left");
    for (const auto& o : kOptions) {
        if (o.kind == Kind::Flag)
            spec.add_options()(o.name, o.help);
        else
            spec.add_options()(o.name, o.help, cxxopts::value<std::string>());
    }
    spec.add_options()("h,help", "print this help")("version", "print the version");
    cxxopts::ParseResult r;
    int n = static_cast<int>(args.size());
    try {
        r = spec.parse(n, args.data());
    } catch (const cxxopts::exceptions::exception& e) {
        throw Error("command line", e.what());
    }
    if (r.count("help")) {
        std::cout << spec.help() << std::endl;
        return std::nullopt;
    }
    if (r.count("version")) {
        std::cout << kProgram << " " << M2H_VERSION << std::endl;
        return std::nullopt;
    }
    if (!r.unmatched().empty()) throw Error("command line", "unexpected argument '" + r.unmatched().front() + "'");

    // Repeatable options: every occurrence, in order (cxxopts' vector values would split on commas).
    for (const auto& kv : r.arguments()) {
        const auto it = std::find_if(kOptions.begin(), kOptions.end(), [&](const OptionDef& o) { return kv.key() == o.name; });
        if (it == kOptions.end()) continue;
        if (it->kind == Kind::List)
            s.lists[it->name].push_back(kv.value());
        else if (it->kind == Kind::Flag)
            s.flags.insert(it->name);
        else
            s.values[canonical_option_name(it->name)] = kv.value();
    }
    if (s.has("iters") && !s.has("iterations")) s.values["iterations"] = s.get("iters");

    if (s.has("profile")) {
        std::vector<std::string> allowed;
        for (const auto& o : kOptions)
            if (o.in_profile) allowed.push_back(canonical_option_name(o.name));
        s.profile_file = resolve_profile_path(s.get("profile"), data_dirs("configs/profiles"));
        const auto profile = parse_profile(read_file(s.profile_file, "the profile"), s.profile_file, allowed);
        for (const auto& [name, value] : profile) {
            const auto def = std::find_if(kOptions.begin(), kOptions.end(), [&](const OptionDef& o) {
                return canonical_option_name(o.name) == name;
            });
            if (def->kind == Kind::List) {
                // Profile entries first, command-line ones after (and so later, where order matters).
                auto& l = s.lists[def->name];
                l.insert(l.begin(), value.values.begin(), value.values.end());
            } else if (def->kind == Kind::Flag) {
                if (!value.values.empty() && value.values.back() == "true") s.flags.insert(def->name);
            } else if (!s.has(name) && !value.values.empty()) {
                s.values[name] = value.values.back();
            }
        }
    }
    return s;
}

std::string require(const Settings& s, const std::string& name) {
    const auto v = s.get(name);
    if (v.empty()) throw Error("command line", "--" + name + " is required (see --help)");
    return v;
}

std::string absolute(const std::string& p) { return fs::absolute(p).lexically_normal().string(); }

// ------------------------------------------------------------------------------------------------------------
// Per-log planning
// ------------------------------------------------------------------------------------------------------------

struct LogPlan {
    std::string log;  // absolute
    std::string name;
    RunInfo run;
    bool finished = false;
    std::string canonical_root;
    std::vector<Iteration> todo;
    std::vector<std::string> todo_outputs;
    std::size_t done = 0, in_flight = 0, saving = 0;
};

std::optional<LogPlan> read_log(const std::string& log_path) {
    LogPlan p;
    p.log = absolute(log_path);
    p.name = log_name_of(p.log);
    try {
        const auto log = parse_training_log(read_file(p.log, "the training log"));
        p.run = describe_run(log, p.log);
        p.finished = log.finished;
    } catch (const Error& e) {
        spdlog::warn("skipping {}", e.what());
        return std::nullopt;
    }
    std::error_code ec;
    p.canonical_root = fs::weakly_canonical(p.run.checkpoint_root, ec).string();
    if (ec) p.canonical_root = p.run.checkpoint_root;
    return p;
}

// Restarted runs leave one log per job, all saving into the same folder: convert that folder once, under the
// log that finished training (its name is the one published models carry), else under the last log.
std::vector<LogPlan> dedupe_by_root(std::vector<LogPlan> plans) {
    std::map<std::string, std::size_t> chosen;
    for (std::size_t i = 0; i < plans.size(); ++i) {
        const auto [it, fresh] = chosen.emplace(plans[i].canonical_root, i);
        if (fresh) continue;
        const auto& kept = plans[it->second];
        const bool replace = plans[i].finished || !kept.finished;
        const auto& dropped = replace ? kept : plans[i];
        spdlog::info("{}: same checkpoint folder as {}; converting it once, as {}", dropped.name,
                     replace ? plans[i].name : kept.name, replace ? plans[i].name : kept.name);
        if (replace) it->second = i;
    }
    std::vector<LogPlan> out;
    for (std::size_t i = 0; i < plans.size(); ++i) {
        const auto it = chosen.find(plans[i].canonical_root);
        if (it->second == i) out.push_back(std::move(plans[i]));
    }
    return out;
}

std::string describe_model(const RunInfo& run) {
    std::string s = run.format.empty() ? "format not in the log" : run.format;
    s += ", TP " + std::to_string(run.tp) + " PP " + std::to_string(run.pp);
    if (run.vpp > 1) s += " VPP " + std::to_string(run.vpp);
    if (run.model_bytes) s += ", ~" + m2h::format_bytes(*run.model_bytes);
    return s;
}

// ------------------------------------------------------------------------------------------------------------
// Assets, templates, engine
// ------------------------------------------------------------------------------------------------------------

bool is_asset_name(const std::string& n) {
    return (n.starts_with("modeling_") && n.ends_with(".py")) || (n.starts_with("configuration_") && n.ends_with(".py")) ||
           n.starts_with("tokenizer") || n == "special_tokens_map.json" || n == "vocab.json";
}

// The files the original workflow copied from <open_sci_hf_path>/sample/, staged once per content into
// <convert_logs_dir>/assets-<hash>/. A folder that is never modified after creation can be read by running
// jobs while a later launch stages different files.
std::string stage_assets(const std::string& open_sci_hf_path, const std::string& convert_logs_dir, bool dry_run) {
    std::error_code ec;
    const fs::path src = fs::is_directory(fs::path(open_sci_hf_path) / "sample", ec) ? fs::path(open_sci_hf_path) / "sample"
                                                                                     : fs::path(open_sci_hf_path);
    if (!fs::is_directory(src, ec)) throw Error(open_sci_hf_path, "--open_sci_hf_path is not a folder");
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(src, ec))
        if (e.is_regular_file(ec) && is_asset_name(e.path().filename().string())) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    if (files.empty())
        throw Error(src.string(), "no modeling_*.py, configuration_*.py or tokenizer files to copy into the outputs");
    std::uint64_t h = 1469598103934665603ull;  // FNV-1a over names and contents
    const auto mix = [&](std::string_view bytes) {
        for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
    };
    for (const auto& f : files) {
        mix(f.filename().string());
        mix(std::string(1, '\0'));
        mix(read_file(f.string(), "an asset"));
    }
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
    const fs::path dest = fs::path(convert_logs_dir) / (std::string("assets-") + hex);
    if (dry_run || fs::is_directory(dest, ec)) return dest.string();
    const fs::path tmp = fs::path(convert_logs_dir) / (".assets-" + std::string(hex) + ".tmp-" + std::to_string(::getpid()));
    fs::remove_all(tmp, ec);
    fs::create_directories(tmp, ec);
    if (ec) throw Error(tmp.string(), "cannot create: " + ec.message());
    for (const auto& f : files) {
        fs::copy_file(f, tmp / f.filename(), ec);
        if (ec) throw Error(f.string(), "cannot copy into " + tmp.string() + ": " + ec.message());
    }
    fs::rename(tmp, dest, ec);
    if (ec) {
        fs::remove_all(tmp, ec);  // another launcher staged the same content first
        if (!fs::is_directory(dest)) throw Error(dest.string(), "cannot create the assets folder");
    }
    return dest.string();
}

struct Template {
    std::string name;  // for messages
    std::string path;
    std::string text;
};

Template load_template(const std::string& choice) {
    std::error_code ec;
    std::string path;
    if (choice.find('/') != std::string::npos || fs::is_regular_file(choice, ec)) {
        path = choice;
    } else {
        for (const auto& dir : data_dirs("sbatch"))
            if (fs::is_regular_file(fs::path(dir) / (choice + ".sbatch"), ec)) {
                path = (fs::path(dir) / (choice + ".sbatch")).string();
                break;
            }
        if (path.empty()) {
            std::string where;
            for (const auto& d : data_dirs("sbatch")) where += (where.empty() ? "" : ", ") + d;
            throw Error("--template", "no template named '" + choice + "' (looked in " + (where.empty() ? "no sbatch/ folder" : where) + ")");
        }
    }
    return {choice, path, read_file(path, "the job script template")};
}

std::string default_engine(bool in_container) {
    if (in_container) return "megatron2hf";  // the image's own
    std::error_code ec;
    const auto beside = exe_dir() / "megatron2hf";
    if (fs::is_regular_file(beside, ec)) return beside.string();
    if (const auto found = find_on_path("megatron2hf")) return *found;
    throw Error("--engine", "megatron2hf is neither next to " + std::string(kProgram) + " nor on PATH; pass --engine PATH");
}

// Container binds: the checkpoint roots holding the inputs, the output root and the assets. A folder inside
// another bound folder is left out. Apptainer and pyxis split binds on ':' and ',', so those cannot appear.
std::vector<std::string> container_binds(const std::vector<std::string>& paths) {
    std::vector<std::string> sorted(paths.begin(), paths.end());
    std::sort(sorted.begin(), sorted.end());
    sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
    std::vector<std::string> binds;
    for (const auto& p : sorted) {
        if (p.find_first_of(":,") != std::string::npos)
            throw Error(p, "cannot be bound into a container (apptainer and pyxis split bind lists on ':' and ',')");
        const bool inside = std::any_of(binds.begin(), binds.end(), [&](const std::string& b) {
            return p == b || (p.starts_with(b) && (b == "/" || p[b.size()] == '/'));
        });
        if (!inside) binds.push_back(p);
    }
    return binds;
}

std::string display_command(const std::vector<std::string>& argv) { return shell_words(argv); }

void write_script(const std::string& path, const std::string& text) {
    const auto tmp = path + ".tmp-" + std::to_string(::getpid());
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out << text;
        if (!out) throw Error(tmp, "cannot write the job script");
    }
    std::error_code ec;
    fs::permissions(tmp, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec | fs::perms::others_read |
                             fs::perms::others_exec, ec);
    fs::rename(tmp, path, ec);
    if (ec) throw Error(path, "cannot write the job script: " + ec.message());
}

// ------------------------------------------------------------------------------------------------------------
// launch
// ------------------------------------------------------------------------------------------------------------

int run_launch(const Settings& s) {
    const auto convert_logs_dir = absolute(require(s, "convert_logs_dir"));
    const auto save_dir = absolute(require(s, "save_checkpoints_dir"));
    const auto logs_spec = require(s, "train_logs_dir_or_path");
    const bool dry_run = s.flag("dry-run");

    if (s.has("opensci_megatron_path") || s.has("megatron_path"))
        spdlog::info("--opensci_megatron_path and --megatron_path are not used: megatron2hf needs neither Megatron nor Python");

    std::string executor = s.get("executor");
    if (executor.empty()) {
        if (find_on_path("sbatch")) {
            executor = "slurm";
        } else {
            executor = "local";
            spdlog::warn("sbatch is not on PATH: running the conversions on this machine with mpirun (--executor local)");
        }
    }
    if (executor != "slurm" && executor != "local") throw Error("--executor", "expected slurm or local, got '" + executor + "'");

    const std::string image = s.get("container_image");
    const std::string template_choice = s.get("template", image.empty() ? "bare" : "apptainer");
    const auto tmpl = load_template(template_choice);
    const bool bare = fs::path(tmpl.path).filename() == "bare.sbatch";
    const bool pyxis = fs::path(tmpl.path).filename() == "pyxis.sbatch";
    if (!image.empty() && bare) spdlog::warn("--container_image is ignored by the bare template");
    if (image.empty() && !bare && (pyxis || fs::path(tmpl.path).filename() == "apptainer.sbatch"))
        throw Error("--template", "'" + template_choice + "' runs the engine in a container: pass --container_image");
    if (pyxis && executor == "local") throw Error("--template", "pyxis needs srun; the local executor runs bare or apptainer");
    const bool in_container = !image.empty() && !bare;

    const std::string mpi = s.get("mpi", "pmix");
    const std::string mpi_launcher = s.get("mpi-launcher", "srun");
    if (!is_sbatch_token(mpi)) throw Error("--mpi", "'" + mpi + "' is not a plain srun --mpi value");
    if (mpi_launcher != "srun" && mpi_launcher != "mpirun") throw Error("--mpi-launcher", "expected srun or mpirun, got '" + mpi_launcher + "'");
    if (pyxis && mpi_launcher != "srun") throw Error("--mpi-launcher", "pyxis starts containers through srun only");

    const std::string engine = s.has("engine") ? s.get("engine") : default_engine(in_container);
    const std::string budget_text = s.get("memory-budget", "1GiB");
    ResourceRequest request;
    request.memory_budget = m2h::parse_byte_size(budget_text, "--memory-budget");
    request.nodes = s.integer("nodes");
    request.ntasks_per_node = s.integer("ntasks-per-node");
    request.max_ranks = s.integer("max-ranks").value_or(16);
    request.mem = s.get("mem", "auto");
    const int max_parallel = s.integer("max-parallel-jobs").value_or(0);
    if (max_parallel < 0) throw Error("--max-parallel-jobs", "must not be negative");
    const int max_array = s.integer("max-array-size").value_or(1000);
    if (max_array < 1) throw Error("--max-array-size", "must be at least 1");
    const auto selection = parse_iteration_selection(s.get("iterations", "all"));
    // slurmd expands %-patterns over the whole job-log path and drops backslashes from it (a backslash turns
    // expansion off), so neither may appear in the folder the job logs go to.
    if (executor == "slurm" && convert_logs_dir.find_first_of("\\%") != std::string::npos)
        throw Error("--convert_logs_dir", "'" + convert_logs_dir +
                                              "': SLURM cannot write job logs into a path containing '\\' or '%'; choose another folder");

    JobSpec base;
    base.job_name = s.get("job-name", "convert_full");
    base.account = s.get("account");
    base.partition = s.get("partition");
    base.qos = s.get("qos");
    base.time = s.get("time", "01:00:00");
    base.max_parallel = max_parallel;
    base.engine = engine;
    base.container_image = in_container ? image : "";
    base.mpi = mpi;
    base.mpi_launcher = mpi_launcher;
    base.generator = std::string(kProgram) + " " + M2H_VERSION + " from " + tmpl.path;
    base.engine_args = {"--memory-budget", budget_text};
    for (const auto& a : s.list("engine-arg")) base.engine_args.push_back(a);
    sbatch_directives([&] {  // reject unsafe #SBATCH values before any file is written
        JobSpec probe = base;
        probe.inputs = probe.iterations = probe.outputs = {"x"};
        return probe;
    }());

    const auto logs = select_logs(logs_spec);
    std::error_code ec;
    fs::create_directories(convert_logs_dir, ec);
    if (ec) throw Error(convert_logs_dir, "cannot create --convert_logs_dir: " + ec.message());
    const auto state_path = state_file_path(convert_logs_dir);
    const auto records = load_records(state_path);

    std::vector<LogPlan> plans;
    std::size_t skipped = 0;
    for (const auto& log : logs) {
        if (auto p = read_log(log))
            plans.push_back(std::move(*p));
        else
            ++skipped;
    }
    plans = dedupe_by_root(std::move(plans));

    // Discover, and drop what is converted already.
    std::vector<LogPlan> work;
    for (auto& p : plans) {
        std::vector<Iteration> available;
        try {
            available = discover_iterations(p.run.checkpoint_root);
        } catch (const Error& e) {
            spdlog::warn("skipping {}: {} (from its {})", p.name, e.what(), p.run.root_source);
            ++skipped;
            continue;
        }
        if (available.empty())
            spdlog::warn("{}: no iter_* or release/ folder in {} (from its {})", p.name, p.run.checkpoint_root, p.run.root_source);
        const auto chosen = select_iterations(available, selection);
        for (const auto& missing : chosen.not_on_disk) spdlog::warn("{}: {} is not on disk under {}", p.name, missing, p.run.checkpoint_root);
        for (const auto& it : chosen.chosen) {
            const auto out = output_dir(save_dir, p.name, it);
            if (check_output(out).complete) {
                ++p.done;
                continue;
            }
            if (!it.saving.empty()) {
                ++p.saving;
                spdlog::info("{}: {} is still being saved (Megatron has not written {} yet): left for a later run",
                             p.name, it.folder_name(), it.saving);
                continue;
            }
            p.todo.push_back(it);
            p.todo_outputs.push_back(out);
        }
        work.push_back(std::move(p));
    }

    // Do not submit again what a previous launch has queued or running.
    const auto latest = latest_tasks(records);
    std::map<std::string, LatestTask> latest_by_output(latest.begin(), latest.end());
    std::vector<std::string> job_ids;
    for (const auto& p : work)
        for (const auto& out : p.todo_outputs)
            if (const auto it = latest_by_output.find(out); it != latest_by_output.end() && it->second.record->executor == "slurm")
                job_ids.push_back(it->second.record->job_id);
    const SlurmView slurm = job_ids.empty() ? SlurmView{} : query_slurm(job_ids);
    for (auto& p : work) {
        std::vector<Iteration> todo;
        std::vector<std::string> outputs;
        for (std::size_t i = 0; i < p.todo.size(); ++i) {
            const auto it = latest_by_output.find(p.todo_outputs[i]);
            if (it != latest_by_output.end() && it->second.record->executor == "slurm") {
                Observation o;
                o.record = it->second.record;
                o.task = it->second.task;
                o.slurm_answered = slurm.squeue_ok || slurm.sacct_ok;
                if (const auto st = slurm.states.find(job_key(*o.record, *o.task)); st != slurm.states.end()) o.slurm_state = st->second;
                if (const auto re = slurm.reasons.find(job_key(*o.record, *o.task)); re != slurm.reasons.end()) o.slurm_reason = re->second;
                const auto c = classify(o);
                if (c.state == TaskState::Queued || c.state == TaskState::Running) {
                    ++p.in_flight;
                    spdlog::info("{}: {} is already {} as job {}", p.name, p.todo[i].folder_name(), state_name(c.state),
                                 job_key(*o.record, *o.task));
                    continue;
                }
            }
            todo.push_back(p.todo[i]);
            outputs.push_back(p.todo_outputs[i]);
        }
        p.todo = std::move(todo);
        p.todo_outputs = std::move(outputs);
        spdlog::info("{}: checkpoint {} ({}); {} converted, {} queued or running, {} being saved, {} to convert", p.name,
                     p.run.checkpoint_root, describe_model(p.run), p.done, p.in_flight, p.saving, p.todo.size());
    }

    std::string assets;
    const bool any_work = std::any_of(work.begin(), work.end(), [](const LogPlan& p) { return !p.todo.empty(); });
    if (any_work && s.has("open_sci_hf_path")) assets = stage_assets(s.get("open_sci_hf_path"), convert_logs_dir, dry_run);
    if (any_work && !s.has("open_sci_hf_path"))
        spdlog::info("no --open_sci_hf_path: outputs get config.json and weights only (no modeling or tokenizer files)");

    std::size_t submitted_logs = 0, submitted_tasks = 0, failures = 0;
    for (const auto& p : work) {
        if (p.todo.empty()) continue;
        const auto res = size_resources(p.run.model_bytes, request);
        const auto out_root = output_root(save_dir, p.name);
        const std::size_t chunks = (p.todo.size() + static_cast<std::size_t>(max_array) - 1) / static_cast<std::size_t>(max_array);
        for (std::size_t c = 0; c < chunks; ++c) {
            JobSpec spec = base;
            spec.resources = res;
            spec.log = p.log;
            spec.checkpoint_root = p.run.checkpoint_root;
            spec.assets = assets;
            std::vector<std::string> bind_paths{out_root};
            if (!assets.empty()) bind_paths.push_back(assets);
            const auto begin = c * static_cast<std::size_t>(max_array);
            const auto end = std::min(p.todo.size(), begin + static_cast<std::size_t>(max_array));
            SubmissionRecord record;
            for (std::size_t i = begin; i < end; ++i) {
                // The real folder: a cool-down run's symlinked iteration then needs no bind of the link's root.
                const auto input = fs::weakly_canonical(p.todo[i].folder, ec).string();
                spec.inputs.push_back(input);
                spec.iterations.push_back(p.todo[i].key());
                spec.outputs.push_back(p.todo_outputs[i]);
                bind_paths.push_back(fs::path(input).parent_path().string());
                record.tasks.push_back({i - begin, p.todo[i].key(), input, p.todo_outputs[i], std::nullopt});
            }
            if (in_container) spec.binds = container_binds(bind_paths);
            const auto script_path = (fs::path(convert_logs_dir) /
                                      ("convert_" + p.name + (chunks > 1 ? ".part" + std::to_string(c + 1) : "") + ".sbatch")).string();
            record.time = utc_now_iso();
            record.executor = executor;
            record.log = p.log;
            record.log_name = p.name;
            record.checkpoint_root = p.run.checkpoint_root;
            record.format = p.run.format;
            record.script = script_path;
            record.job_name = spec.job_name;
            try {
                write_script(script_path, render_job_script(tmpl.text, tmpl.path, spec));
                const std::string what = std::to_string(spec.inputs.size()) + " iteration(s), " + std::to_string(res.ranks()) +
                                         " rank(s) each on " + std::to_string(res.nodes) + " node(s)";
                if (dry_run) {
                    std::vector<std::string> sbatch{"sbatch", "--parsable", "--chdir=" + convert_logs_dir};
                    for (const auto& extra : s.list("sbatch-arg")) sbatch.push_back(extra);
                    sbatch.push_back(script_path);
                    const auto cmd = executor == "slurm"
                                         ? display_command(sbatch)
                                         : "SLURM_ARRAY_TASK_ID=0.." + std::to_string(spec.inputs.size() - 1) + " bash " + shell_quote(script_path);
                    spdlog::info("{}: dry run, {}: {}", p.name, what, cmd);
                    ++submitted_logs;
                    submitted_tasks += spec.inputs.size();
                    continue;
                }
                fs::create_directories(out_root, ec);
                if (ec) throw Error(out_root, "cannot create: " + ec.message());
                if (executor == "slurm") {
                    auto args = s.list("sbatch-arg");
                    record.job_id = submit_sbatch(script_path, convert_logs_dir, args);
                    append_record(state_path, record);
                    spdlog::info("{}: submitted job array {} ({}): {}", p.name, record.job_id, what, script_path);
                } else {
                    // Same script, no allocation: the script falls back to mpirun on this machine.
                    record.job_id = "local-" + std::to_string(::time(nullptr)) + "-" + std::to_string(::getpid());
                    spdlog::info("{}: running {} here ({})", p.name, what, script_path);
                    for (auto& t : record.tasks) {
                        CommandOptions o;
                        o.cwd = convert_logs_dir;
                        o.timeout_s = 0;
                        o.set_env["SLURM_ARRAY_TASK_ID"] = std::to_string(t.task);
                        o.unset_env = {"SLURM_JOB_ID", "SLURM_JOBID", "SLURM_ARRAY_JOB_ID"};
                        const auto stem = (fs::path(convert_logs_dir) / (spec.job_name + "_" + record.job_id + "_" + std::to_string(t.task))).string();
                        o.stdout_file = stem + ".out";
                        o.stderr_file = stem + ".err";
                        const auto r = run_command({"bash", script_path}, o);
                        t.exit_code = r.exit_code;
                        if (r.exit_code == 0)
                            spdlog::info("{}: {} converted", p.name, t.output);
                        else {
                            ++failures;
                            spdlog::error("{}: iteration {} failed (exit {}); see {}.err", p.name, t.iteration, r.exit_code, stem);
                        }
                    }
                    append_record(state_path, record);
                }
                ++submitted_logs;
                submitted_tasks += spec.inputs.size();
            } catch (const Error& e) {
                ++failures;
                spdlog::error("{}: {}", p.name, e.what());
            }
        }
    }
    const char* verb = dry_run ? "prepared" : executor == "slurm" ? "submitted" : "ran";
    spdlog::info("{} log(s): {} {} ({} iteration(s)), {} skipped, {} failed; scripts and job logs in {}", logs.size(), verb,
                 submitted_logs, submitted_tasks, skipped, failures, convert_logs_dir);
    return failures ? 1 : 0;
}

// ------------------------------------------------------------------------------------------------------------
// status
// ------------------------------------------------------------------------------------------------------------

// Every (log, iteration) status knows of, classified: what `status` prints and what `clean` must not touch.
std::vector<StatusRow> status_rows(const Settings& s) {
    const auto convert_logs_dir = absolute(require(s, "convert_logs_dir"));
    const auto records = load_records(state_file_path(convert_logs_dir));

    // Targets: everything ever submitted from this folder, plus, when logs are given, every selected
    // iteration on disk (so unsubmitted ones show too).
    struct Target {
        std::string log_name, iteration, output;
        std::string saving;  // known for the iterations found on disk
    };
    std::vector<Target> targets;
    std::map<std::string, std::size_t> seen;  // output -> target
    const auto latest = latest_tasks(records);
    for (const auto& [output, lt] : latest)
        if (seen.emplace(output, targets.size()).second) targets.push_back({lt.record->log_name, lt.task->iteration, output, ""});
    if (s.has("train_logs_dir_or_path")) {
        const auto save_dir = absolute(require(s, "save_checkpoints_dir"));
        const auto selection = parse_iteration_selection(s.get("iterations", "all"));
        std::vector<LogPlan> plans;
        for (const auto& log : select_logs(s.get("train_logs_dir_or_path")))
            if (auto p = read_log(log)) plans.push_back(std::move(*p));
        for (const auto& p : dedupe_by_root(std::move(plans))) {
            try {
                for (const auto& it : select_iterations(discover_iterations(p.run.checkpoint_root), selection).chosen) {
                    const auto out = output_dir(save_dir, p.name, it);
                    if (const auto [at, fresh] = seen.emplace(out, targets.size()); fresh)
                        targets.push_back({p.name, it.key(), out, it.saving});
                    else
                        targets[at->second].saving = it.saving;
                }
            } catch (const Error& e) {
                spdlog::warn("{}: {}", p.name, e.what());
            }
        }
    }

    std::map<std::string, LatestTask> by_output(latest.begin(), latest.end());
    std::vector<std::string> job_ids;
    for (const auto& [output, lt] : latest)
        if (lt.record->executor == "slurm") job_ids.push_back(lt.record->job_id);
    const SlurmView slurm = query_slurm(job_ids);

    std::vector<StatusRow> rows;
    for (const auto& t : targets) {
        const auto check = check_output(t.output);
        Observation o;
        o.output_complete = check.complete;
        o.output_problem = check.problem;
        o.saving = t.saving;
        o.slurm_answered = slurm.squeue_ok || slurm.sacct_ok;
        StatusRow row{t.log_name, t.iteration, t.output, TaskState::Unknown, "", ""};
        if (const auto it = by_output.find(t.output); it != by_output.end()) {
            o.record = it->second.record;
            o.task = it->second.task;
            row.job = o.record->executor == "slurm" ? job_key(*o.record, *o.task) : o.record->job_id + "_" + std::to_string(o.task->task);
            if (const auto st = slurm.states.find(row.job); st != slurm.states.end()) o.slurm_state = st->second;
            if (const auto re = slurm.reasons.find(row.job); re != slurm.reasons.end()) o.slurm_reason = re->second;
        }
        const auto c = classify(o);
        row.state = c.state;
        row.detail = c.detail;
        if (c.state == TaskState::Failed || c.state == TaskState::Timeout) {
            const auto err = fs::path(convert_logs_dir) / (o.record->job_name + "_" + row.job + ".err");
            if (fs::exists(err)) row.detail += (row.detail.empty() ? "" : "; ") + std::string("see ") + err.string();
        }
        rows.push_back(std::move(row));
    }
    std::stable_sort(rows.begin(), rows.end(), [](const StatusRow& a, const StatusRow& b) {
        if (a.log_name != b.log_name) return a.log_name < b.log_name;
        const auto num = [](const std::string& it) { return it == "release" ? -1LL : std::stoll(it); };
        return num(a.iteration) < num(b.iteration);
    });
    return rows;
}

// The staging folders beside the outputs status knows of, and whether a queued or running task may still be
// writing into one.
std::vector<std::pair<Leftover, bool>> leftovers(const std::vector<StatusRow>& rows) {
    std::set<std::string> hf_dirs, busy;
    for (const auto& r : rows) {
        hf_dirs.insert(fs::path(r.output).parent_path().string());
        if (r.state == TaskState::Queued || r.state == TaskState::Running) busy.insert(r.output);
    }
    std::vector<std::pair<Leftover, bool>> out;
    for (const auto& dir : hf_dirs)
        for (auto& l : leftover_staging(dir)) {
            const bool in_use = busy.count(l.output) > 0;
            out.emplace_back(std::move(l), in_use);
        }
    return out;
}

int run_status(const Settings& s) {
    const auto format = s.get("format", "table");
    if (format != "table" && format != "json") throw Error("--format", "expected table or json, got '" + format + "'");
    const auto rows = status_rows(s);
    std::cout << (format == "json" ? render_status_json(rows) : render_status_table(rows)) << std::flush;
    for (const auto& [l, in_use] : leftovers(rows))
        spdlog::warn("leftover staging folder {} ({}){}", l.path, m2h::format_bytes(l.bytes),
                     in_use ? ": its task is queued or running" : ": `megatron2hf-launch clean` removes it");
    return 0;
}

// Removes the staging folders killed conversions left, except where a queued or running task may use one.
int run_clean(const Settings& s) {
    std::uint64_t freed = 0;
    std::size_t removed = 0;
    for (const auto& [l, in_use] : leftovers(status_rows(s))) {
        if (in_use) {
            spdlog::info("keeping {}: its task is queued or running", l.path);
            continue;
        }
        std::error_code ec;
        fs::remove_all(l.path, ec);
        if (ec) throw Error(l.path, "cannot remove: " + ec.message());
        spdlog::info("removed {} ({})", l.path, m2h::format_bytes(l.bytes));
        freed += l.bytes;
        ++removed;
    }
    spdlog::info("clean: removed {} leftover staging folder(s), {} freed", removed, m2h::format_bytes(freed));
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    auto logger = spdlog::stderr_color_mt(kProgram);
    logger->set_pattern("[%Y-%m-%d %H:%M:%S] [%n] [%^%l%$] %v");
    spdlog::set_default_logger(logger);
    try {
        const auto settings = parse_settings(argc, argv);
        if (!settings) return 0;
        switch (settings->command) {
            case Command::Status: return run_status(*settings);
            case Command::Clean: return run_clean(*settings);
            case Command::Launch: return run_launch(*settings);
        }
        return 2;
    } catch (const Error& e) {
        std::fprintf(stderr, "%s: error: %s\n", kProgram, e.what());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: internal error: %s\n", kProgram, e.what());
        return 2;
    }
}
