// The option table, and the merge of the command line with a cluster profile.
#include "settings.hpp"

#include <algorithm>
#include <filesystem>
#include <iostream>

#include <cxxopts.hpp>

#include "common/error.hpp"
#include "local_files.hpp"
#include "profile.hpp"

namespace m2h::launch {

namespace {

namespace fs = std::filesystem;

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
    {"iterations-per-task", "iterations one array task converts in one engine run: auto (default: ~16 GB of checkpoints per task, at most 40) or N", Kind::Value, true},
    {"max-array-size", "largest array per submission; more iterations are split (default 1000)", Kind::Value, true},
    {"mpi", "srun --mpi value (default pmix; 'default' leaves it to the cluster)", Kind::Value, true},
    {"mpi-launcher", "srun (default) or mpirun, inside the allocation", Kind::Value, true},
    {"engine", "megatron2hf binary (default: next to this program; 'megatron2hf' inside a container)", Kind::Value, true},
    {"model-card", "template of each output's README.md model card (the engine's --model-card; default: its built-in one)", Kind::Value, true},
    {"no-model-card", "write no README.md model card", Kind::Flag, true},
    {"engine-arg", "extra engine argument, repeatable (e.g. --engine-arg=--dtype=bf16)", Kind::List, true},
    {"sbatch-arg", "extra sbatch argument, repeatable (e.g. --sbatch-arg=--gres=gpu:0)", Kind::List, true},
    {"then", "evaluation script for each converted iteration: sbatch'ed with --dependency=afterok on its conversion task (run after it with the local executor); gets the HF folder as $1 and M2H_HF_PATH, M2H_ITERATION, M2H_LOG_NAME", Kind::Value, true},
    {"interval", "watch: how often to look for new checkpoints (default 10m; s, m, h, d)", Kind::Value, true},
    {"until", "watch: stop at this time (YYYY-MM-DDTHH:MM[:SS]) or after this long (e.g. 3d) at the latest", Kind::Value, false},
    {"max-attempts", "watch: submit one iteration at most this many times (default 2)", Kind::Value, true},
    {"as-slurm-job", "watch: run as a small SLURM job that resubmits itself every --interval, not in the foreground", Kind::Flag, false},
    {"round", "watch: run one round and resubmit this job script (what --as-slurm-job's job runs)", Kind::Value, false},
    {"profile", "cluster defaults: a JSON file, or a name in configs/profiles/", Kind::Value, false},
    {"format", "status output: table (default) or json", Kind::Value, false},
};

// Repeatable options: every occurrence, in order (cxxopts' vector values would split on commas).
void take_command_line(const cxxopts::ParseResult& r, Settings& s) {
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
}

// Fills in what the command line left unset; list entries go first, so command-line ones come later.
void take_profile(Settings& s) {
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

cxxopts::Options option_spec() {
    cxxopts::Options spec(kProgram,
                          "Turns Megatron-LM training logs into SLURM job arrays that convert every checkpoint iteration "
                          "with megatron2hf.\n  megatron2hf-launch --convert_logs_dir D --train_logs_dir_or_path L "
                          "--save_checkpoints_dir S [options]\n  megatron2hf-launch watch ... [--interval 10m] [--as-slurm-job]: convert each "
                          "new checkpoint as training saves it\n  megatron2hf-launch status --convert_logs_dir D [...]\n  "
                          "megatron2hf-launch clean --convert_logs_dir D [...]: remove what killed conversions left");
    for (const auto& o : kOptions) {
        if (o.kind == Kind::Flag)
            spec.add_options()(o.name, o.help);
        else
            spec.add_options()(o.name, o.help, cxxopts::value<std::string>());
    }
    spec.add_options()("h,help", "print this help")("version", "print the version");
    return spec;
}

}  // namespace

std::string Settings::get(const std::string& name, const std::string& fallback) const {
    const auto it = values.find(canonical_option_name(name));
    return it == values.end() ? fallback : it->second;
}

bool Settings::has(const std::string& name) const { return values.count(canonical_option_name(name)) > 0; }

std::vector<std::string> Settings::list(const std::string& name) const {
    const auto it = lists.find(name);
    return it == lists.end() ? std::vector<std::string>{} : it->second;
}

std::optional<int> Settings::integer(const std::string& name) const {
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

std::optional<Settings> parse_settings(int argc, char** argv) {
    Settings s;
    std::vector<char*> args(argv, argv + argc);
    static const std::map<std::string, Command> commands{
        {"watch", Command::Watch}, {"status", Command::Status}, {"clean", Command::Clean}};
    if (args.size() > 1)
        if (const auto it = commands.find(args[1]); it != commands.end()) {
            s.command = it->second;
            args.erase(args.begin() + 1);
        }
    s.args.assign(args.begin() + 1, args.end());
    auto spec = option_spec();
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
    take_command_line(r, s);
    if (s.has("profile")) take_profile(s);
    return s;
}

std::string require(const Settings& s, const std::string& name) {
    const auto v = s.get(name);
    if (v.empty()) throw Error("command line", "--" + name + " is required (see --help)");
    return v;
}

std::string absolute(const std::string& p) { return fs::absolute(p).lexically_normal().string(); }

}  // namespace m2h::launch
