#pragma once
// Job scripts: shell quoting, resource sizing and template rendering. Pure functions: no files, no SLURM.
//
// Safety rule: a value from a log, a file name or the command line reaches the script only (a) as one
// single-quoted shell word inside a placeholder, or (b) in an #SBATCH line after is_sbatch_token() accepted it.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace m2h::launch {

// One shell word that bash reads back as exactly `s`: 'it'\''s' style. The empty string becomes ''.
std::string shell_quote(std::string_view s);
// Quoted words separated by spaces (the body of a bash array).
std::string shell_words(const std::vector<std::string>& words);

// Characters that may appear unquoted in an #SBATCH line (account, partition, QoS, time, job name, ...).
bool is_sbatch_token(std::string_view s);

struct ResourceRequest {
    std::uint64_t memory_budget = 1ull << 30;  // per rank, passed to the engine
    std::optional<int> nodes;                  // command line / profile; unset = sized
    std::optional<int> ntasks_per_node;
    int max_ranks = 16;
    std::string mem = "auto";  // "auto" (sized), "none" (no --mem line) or a SLURM size such as 64G
};

struct Resources {
    int nodes = 1;
    int ntasks_per_node = 1;
    std::string mem;  // the --mem value, "" for none
    int ranks() const { return nodes * ntasks_per_node; }
};

// Ranks: enough that the whole model moves in one exchange round (the engine sends at most a third of its
// budget per rank per round), i.e. ceil(3 * model_bytes / budget), between 1 and max_ranks; 1 when the size
// is unknown. Nodes default to 1; explicit nodes / tasks per node win. Memory per node: each rank's budget
// plus 512 MiB for the index and the process itself.
Resources size_resources(std::optional<std::uint64_t> model_bytes, const ResourceRequest& request);

// "0-N%P" for an array of `tasks` tasks, throttled to `max_parallel` (0 = no throttle).
std::string array_spec(std::size_t tasks, int max_parallel);

struct JobSpec {
    // #SBATCH lines
    std::string job_name = "convert_full";
    std::string account, partition, qos, time;
    Resources resources;
    int max_parallel = 0;
    // Script values
    std::string log;
    std::string checkpoint_root;
    std::string engine;
    std::vector<std::string> engine_args;
    std::string assets;
    std::string container_image;
    std::vector<std::string> binds;
    std::string mpi = "pmix";  // srun --mpi value; "default" leaves --mpi out
    std::string mpi_launcher = "srun";
    std::vector<std::string> inputs, iterations, outputs;  // one per array task
    std::string generator;  // e.g. "megatron2hf-launch 0.1.0", for the header comment
};

// "#SBATCH --option=value\n"; "" for an empty value. Throws m2h::Error naming the option for an unsafe value.
std::string sbatch_line(const std::string& option, const std::string& value);

// The #SBATCH block. Throws m2h::Error naming the option whose value is not a safe token.
std::string sbatch_directives(const JobSpec& spec);

// {{NAME}} → value, in one pass (values are never rescanned). Throws m2h::Error(template_name, ...) for an
// unknown or unterminated placeholder.
std::string render_template(std::string_view text, const std::map<std::string, std::string>& values,
                            const std::string& template_name);

// Every placeholder a template may use, already quoted (see docs/launcher.md).
std::map<std::string, std::string> script_placeholders(const JobSpec& spec);

std::string render_job_script(std::string_view template_text, const std::string& template_name, const JobSpec& spec);

}  // namespace m2h::launch
