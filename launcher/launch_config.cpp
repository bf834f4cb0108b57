#include "launch_config.hpp"

#include <filesystem>

#include <spdlog/spdlog.h>

#include "common/byte_size.hpp"
#include "common/error.hpp"
#include "local_files.hpp"
#include "submission.hpp"

namespace m2h::launch {

namespace {

namespace fs = std::filesystem;

std::string choose_executor(const Settings& s) {
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
    return executor;
}

// A path, or a name looked up as <dir>/<name>.sbatch in the sbatch/ folders.
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

bool is_template(const Template& t, const char* file_name) { return fs::path(t.path).filename() == file_name; }

// Whether the engine runs in a container: the shipped container templates need an image, the bare one
// ignores it, and pyxis needs srun (which the local executor does not have).
bool check_container(const Template& tmpl, const std::string& image, const std::string& executor) {
    const bool bare = is_template(tmpl, "bare.sbatch");
    const bool pyxis = is_template(tmpl, "pyxis.sbatch");
    if (!image.empty() && bare) spdlog::warn("--container_image is ignored by the bare template");
    if (image.empty() && !bare && (pyxis || is_template(tmpl, "apptainer.sbatch")))
        throw Error("--template", "'" + tmpl.name + "' runs the engine in a container: pass --container_image");
    if (pyxis && executor == "local") throw Error("--template", "pyxis needs srun; the local executor runs bare or apptainer");
    return !image.empty() && !bare;
}

void check_mpi(const std::string& mpi, const std::string& mpi_launcher, bool pyxis) {
    if (!is_sbatch_token(mpi)) throw Error("--mpi", "'" + mpi + "' is not a plain srun --mpi value");
    if (mpi_launcher != "srun" && mpi_launcher != "mpirun") throw Error("--mpi-launcher", "expected srun or mpirun, got '" + mpi_launcher + "'");
    if (pyxis && mpi_launcher != "srun") throw Error("--mpi-launcher", "pyxis starts containers through srun only");
}

std::string default_engine(bool in_container) {
    if (in_container) return "megatron2hf";  // the image's own
    std::error_code ec;
    const auto beside = exe_dir() / "megatron2hf";
    if (fs::is_regular_file(beside, ec)) return beside.string();
    if (const auto found = find_on_path("megatron2hf")) return *found;
    throw Error("--engine", "megatron2hf is neither next to " + std::string(kProgram) + " nor on PATH; pass --engine PATH");
}

ResourceRequest resource_request(const Settings& s, const std::string& budget_text) {
    ResourceRequest request;
    request.memory_budget = m2h::parse_byte_size(budget_text, "--memory-budget");
    request.nodes = s.integer("nodes");
    request.ntasks_per_node = s.integer("ntasks-per-node");
    request.max_ranks = s.integer("max-ranks").value_or(16);
    request.mem = s.get("mem", "auto");
    return request;
}

// The #SBATCH and script values all jobs share. Unsafe #SBATCH values are rejected here, before any file is
// written.
JobSpec base_job_spec(const Settings& s, const LaunchConfig& c, const std::string& engine, const std::string& budget_text,
                      int max_parallel) {
    JobSpec base;
    base.job_name = s.get("job-name", "convert_full");
    base.account = s.get("account");
    base.partition = s.get("partition");
    base.qos = s.get("qos");
    base.time = s.get("time", "01:00:00");
    base.max_parallel = max_parallel;
    base.engine = engine;
    base.container_image = c.in_container ? s.get("container_image") : "";
    base.mpi = s.get("mpi", "pmix");
    base.mpi_launcher = s.get("mpi-launcher", "srun");
    base.generator = std::string(kProgram) + " " + M2H_VERSION + " from " + c.tmpl.path;
    base.engine_args = {"--memory-budget", budget_text};
    if (!c.model_card.empty()) base.engine_args.insert(base.engine_args.end(), {"--model-card", c.model_card});
    if (s.flag("no-model-card")) base.engine_args.push_back("--no-model-card");
    for (const auto& a : s.list("engine-arg")) base.engine_args.push_back(a);
    sbatch_directives([&] {  // reject unsafe #SBATCH values before any file is written
        JobSpec probe = base;
        probe.inputs = probe.iterations = probe.outputs = {"x"};
        return probe;
    }());
    return base;
}

}  // namespace

LaunchConfig read_launch_config(const Settings& s) {
    LaunchConfig c;
    c.convert_logs_dir = absolute(require(s, "convert_logs_dir"));
    c.save_dir = absolute(require(s, "save_checkpoints_dir"));
    c.logs_spec = require(s, "train_logs_dir_or_path");
    c.dry_run = s.flag("dry-run");
    c.sbatch_args = s.list("sbatch-arg");

    if (s.has("opensci_megatron_path") || s.has("megatron_path"))
        spdlog::info("--opensci_megatron_path and --megatron_path are not used: megatron2hf needs neither Megatron nor Python");

    c.executor = choose_executor(s);
    const std::string image = s.get("container_image");
    c.tmpl = load_template(s.get("template", image.empty() ? "bare" : "apptainer"));
    c.in_container = check_container(c.tmpl, image, c.executor);
    check_mpi(s.get("mpi", "pmix"), s.get("mpi-launcher", "srun"), is_template(c.tmpl, "pyxis.sbatch"));

    const std::string engine = s.has("engine") ? s.get("engine") : default_engine(c.in_container);
    const std::string budget_text = s.get("memory-budget", "1GiB");
    c.request = resource_request(s, budget_text);
    const int max_parallel = s.integer("max-parallel-jobs").value_or(0);
    if (max_parallel < 0) throw Error("--max-parallel-jobs", "must not be negative");
    c.max_array = s.integer("max-array-size").value_or(1000);
    if (c.max_array < 1) throw Error("--max-array-size", "must be at least 1");
    if (const auto per_task = s.get("iterations-per-task", "auto"); per_task != "auto") {
        c.iterations_per_task = s.integer("iterations-per-task").value_or(0);
        if (c.iterations_per_task < 1) throw Error("--iterations-per-task", "expected auto or a number of at least 1");
    }
    c.selection = parse_iteration_selection(s.get("iterations", "all"));
    // slurmd expands %-patterns over the whole job-log path and drops backslashes from it (a backslash turns
    // expansion off), so neither may appear in the folder the job logs go to.
    if (c.executor == "slurm" && c.convert_logs_dir.find_first_of("\\%") != std::string::npos)
        throw Error("--convert_logs_dir", "'" + c.convert_logs_dir +
                                              "': SLURM cannot write job logs into a path containing '\\' or '%'; choose another folder");

    if (s.has("then")) {
        c.then_script = absolute(s.get("then"));
        std::error_code ec;
        if (!fs::is_regular_file(c.then_script, ec)) throw Error("--then", "'" + c.then_script + "' is not a file");
    }
    if (s.has("model-card")) {
        if (s.flag("no-model-card")) throw Error("--model-card", "and --no-model-card contradict each other");
        c.model_card = absolute(s.get("model-card"));
        std::error_code ec;
        if (!fs::is_regular_file(c.model_card, ec)) throw Error("--model-card", "'" + c.model_card + "' is not a file");
    }
    c.base = base_job_spec(s, c, engine, budget_text, max_parallel);
    return c;
}

}  // namespace m2h::launch
