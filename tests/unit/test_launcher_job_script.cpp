// Job scripts: quoting (checked by bash itself), sizing, #SBATCH validation, template rendering.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "common/error.hpp"
#include "job_script.hpp"
#include "submission.hpp"

using namespace m2h::launch;

namespace {

const std::vector<std::string> kHostile = {
    "plain", "", "with space", "it's", "\"double\"", "$(touch /tmp/m2h-pwned)", "`touch /tmp/m2h-pwned`",
    "a;b", "$HOME", "back\\slash", "new\nline", "*", "'", "''", "-n", "tab\there", "{{LOG}}", "ünïcode",
};

// What bash makes of the rendered words: each argument NUL-terminated.
std::vector<std::string> bash_words(const std::string& words) {
    const auto r = run_command({"bash", "-c", "args=(" + words + "); printf '%s\\0' \"${args[@]}\""});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::vector<std::string> out;
    std::string cur;
    for (char c : r.out) {
        if (c == '\0') {
            out.push_back(cur);
            cur.clear();
        } else {
            cur += c;
        }
    }
    return out;
}

JobSpec sample_spec() {
    JobSpec s;
    s.account = "acct";
    s.partition = "boost_usr_prod";
    s.time = "00:30:00";
    s.resources = {1, 4, "4096M"};
    s.max_parallel = 2;
    s.log = "/logs/run 1.out";
    s.engine = "/opt/m2h/bin/megatron2hf";
    s.engine_args = {"--memory-budget", "1GiB"};
    s.inputs = {"/ckpt/iter_0000100", "/ckpt/iter_0000200"};
    s.iterations = {"100", "200"};
    s.outputs = {"/save/run 1/hf/iter_0000100", "/save/run 1/hf/iter_0000200"};
    s.generator = "test";
    return s;
}

std::string read(const std::string& path) {
    std::ifstream in(path);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

}  // namespace

TEST(LauncherJobScript, QuotedWordsComeBackExactlyFromBash) {
    EXPECT_EQ(shell_quote("it's"), "'it'\\''s'");
    EXPECT_EQ(shell_quote(""), "''");
    ::unlink("/tmp/m2h-pwned");
    EXPECT_EQ(bash_words(shell_words(kHostile)), kHostile);
    EXPECT_NE(::access("/tmp/m2h-pwned", F_OK), 0) << "a quoted word ran as a command";
    ::unlink("/tmp/m2h-pwned");
}

TEST(LauncherJobScript, SbatchTokens) {
    for (const char* ok : {"boost_usr_prod", "1-00:00:00", "gpu:4", "a.b-c+d@e", "cpu[1-4]", "gres=x"})
        EXPECT_TRUE(is_sbatch_token(ok)) << ok;
    for (const char* bad : {"", "a b", "x;y", "$(id)", "a\nb", "'q'", "a#b", "`x`"}) EXPECT_FALSE(is_sbatch_token(bad)) << bad;
    auto spec = sample_spec();
    spec.account = "acct\n#SBATCH --uid=0";
    try {
        sbatch_directives(spec);
        FAIL() << "no error";
    } catch (const m2h::Error& e) {
        EXPECT_EQ(std::string(e.what()).rfind("--account: ", 0), 0u) << e.what();
    }
}

TEST(LauncherJobScript, RanksFromModelSizeAndBudget) {
    ResourceRequest r;
    r.memory_budget = 1ull << 30;
    // One exchange round: a third of the budget per rank and round.
    EXPECT_EQ(size_resources(std::nullopt, r).ranks(), 1);
    EXPECT_EQ(size_resources(250'000'000, r).ranks(), 1);
    EXPECT_EQ(size_resources(3'428'755'456, r).ranks(), 10);  // 1.7B bf16
    EXPECT_EQ(size_resources(3'428'755'456, r).nodes, 1);
    EXPECT_EQ(size_resources(100'000'000'000, r).ranks(), 16);  // capped by max_ranks
    r.max_ranks = 64;
    r.nodes = 4;
    const auto four = size_resources(100'000'000'000, r);
    EXPECT_EQ(four.nodes, 4);
    EXPECT_EQ(four.ntasks_per_node, 16);
    r.ntasks_per_node = 2;  // explicit values win
    EXPECT_EQ(size_resources(100'000'000'000, r).ranks(), 8);
}

TEST(LauncherJobScript, MemoryPerNode) {
    ResourceRequest r;
    r.memory_budget = 1ull << 30;
    r.ntasks_per_node = 4;
    EXPECT_EQ(size_resources(1, r).mem, std::to_string(4 * (1024 + 512)) + "M");
    r.mem = "none";
    EXPECT_EQ(size_resources(1, r).mem, "");
    r.mem = "64G";
    EXPECT_EQ(size_resources(1, r).mem, "64G");
    r.memory_budget = 0;
    EXPECT_THROW(size_resources(1, r), m2h::Error);
}

TEST(LauncherJobScript, ArraySpec) {
    EXPECT_EQ(array_spec(1, 0), "0");
    EXPECT_EQ(array_spec(5, 0), "0-4");
    EXPECT_EQ(array_spec(122, 8), "0-121%8");
}

TEST(LauncherJobScript, Directives) {
    const auto d = sbatch_directives(sample_spec());
    for (const char* line : {"#SBATCH --job-name=convert_full\n", "#SBATCH --account=acct\n",
                             "#SBATCH --partition=boost_usr_prod\n", "#SBATCH --nodes=1\n",
                             "#SBATCH --ntasks-per-node=4\n", "#SBATCH --mem=4096M\n", "#SBATCH --time=00:30:00\n",
                             "#SBATCH --array=0-1%2\n", "#SBATCH --signal=USR1@60\n", "#SBATCH --no-requeue\n", "#SBATCH --output=%x_%A_%a.out\n", "#SBATCH --error=%x_%A_%a.err"})
        EXPECT_NE(d.find(line), std::string::npos) << line;
    EXPECT_EQ(d.find("--qos"), std::string::npos);  // unset values leave no line
}

TEST(LauncherJobScript, RenderTemplate) {
    EXPECT_EQ(render_template("a={{A}} b={{B}}", {{"A", "1"}, {"B", "{{A}}"}}, "t"), "a=1 b={{A}}");  // one pass
    try {
        render_template("x={{NOPE}}", {{"A", "1"}}, "sbatch/custom.sbatch");
        FAIL() << "no error";
    } catch (const m2h::Error& e) {
        EXPECT_NE(std::string(e.what()).find("sbatch/custom.sbatch: unknown placeholder {{NOPE}}"), std::string::npos);
    }
    EXPECT_THROW(render_template("x={{A\n}}", {{"A", "1"}}, "t"), m2h::Error);
}

TEST(LauncherJobScript, GeneratorCannotBreakOutOfTheCommentLine) {
    auto spec = sample_spec();
    spec.generator = "x\nrm -rf /";
    const auto p = script_placeholders(spec);
    EXPECT_EQ(p.at("GENERATED").find('\n'), std::string::npos);
}

TEST(LauncherJobScript, BundledTemplatesRenderToValidBashThatMapsTasksToIterations) {
    const char* src = std::getenv("M2H_SOURCE_DIR");
    ASSERT_NE(src, nullptr);
    auto spec = sample_spec();
    spec.log = kHostile[5] + kHostile[6] + kHostile[3];
    spec.inputs = {kHostile[5], kHostile[2] + kHostile[9]};
    spec.outputs = {kHostile[6], kHostile[7] + kHostile[11]};
    spec.container_image = "/images/m2h.sif";
    spec.binds = {"/ckpt", "/save"};
    for (const char* name : {"bare", "apptainer", "pyxis"}) {
        const std::string path = std::string(src) + "/sbatch/" + name + ".sbatch";
        const auto script = render_job_script(read(path), path, spec);
        const std::string file = ::testing::TempDir() + "/m2h_" + name + ".sbatch";
        std::ofstream(file) << script;
        const auto syntax = run_command({"bash", "-n", file});
        EXPECT_EQ(syntax.exit_code, 0) << name << ": " << syntax.err;
        // Source the value section only (up to the task lookup) and read the arrays back.
        const auto probe = run_command({"bash", "-c", "eval \"$(sed -n '/^LOG=/,/^OUTPUTS=/p' \"$1\")\"; "
                                                      "printf '%s\\0' \"$LOG\" \"${INPUTS[1]}\" \"${OUTPUTS[0]}\" \"${ITERATIONS[1]}\"",
                                        "probe", file});
        EXPECT_EQ(probe.out, spec.log + '\0' + spec.inputs[1] + '\0' + spec.outputs[0] + '\0' + "200" + '\0') << name;
    }
}
