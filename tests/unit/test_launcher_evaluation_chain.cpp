// --then: what the chained evaluation gets, how it is chained, how status reports it, and its state records.
#include <gtest/gtest.h>

#include "evaluation_chain.hpp"
#include "state_file.hpp"
#include "status.hpp"

using namespace m2h::launch;

namespace {

SubmissionRecord chained_record(const std::string& executor) {
    SubmissionRecord r;
    r.executor = executor;
    r.job_id = executor == "slurm" ? "41" : "local-1-2";
    r.log = "/logs/run_7.out";
    r.log_name = "run_7";
    r.then_script = "/evals/lm-eval.sbatch";
    r.tasks.push_back({3, "2000", "/ckpt/iter_0002000", "/save/run_7/hf/iter_0002000", std::nullopt, "", std::nullopt});
    return r;
}

}  // namespace

TEST(EvaluationChain, EnvironmentNamesTheOutputIterationAndRun) {
    const auto r = chained_record("slurm");
    const auto env = then_environment(r, r.tasks[0]);
    EXPECT_EQ(env.at("M2H_HF_PATH"), "/save/run_7/hf/iter_0002000");
    EXPECT_EQ(env.at("M2H_ITERATION"), "2000");
    EXPECT_EQ(env.at("M2H_LOG_NAME"), "run_7");
    EXPECT_EQ(env.at("M2H_LOG"), "/logs/run_7.out");
    EXPECT_EQ(env.at("M2H_CHECKPOINT_PATH"), "/ckpt/iter_0002000");
}

TEST(EvaluationChain, DependsOnItsOwnArrayTaskAndDiesWithIt) {
    const auto r = chained_record("slurm");
    EXPECT_EQ(then_dependency_args(job_key(r, r.tasks[0])),
              (std::vector<std::string>{"--dependency=afterok:41_3", "--kill-on-invalid-dep=yes"}));
}

TEST(EvaluationChain, StateFromSlurmOrTheLocalExitCode) {
    auto r = chained_record("slurm");
    auto& t = r.tasks[0];
    EXPECT_EQ(then_state(r, t, std::nullopt), "not submitted");
    t.then_job = "42";
    EXPECT_EQ(then_state(r, t, std::nullopt), "unknown");
    EXPECT_EQ(then_state(r, t, "PENDING"), "queued");
    EXPECT_EQ(then_state(r, t, "CANCELLED"), "cancelled");
    EXPECT_EQ(then_state(r, t, "COMPLETED"), "completed");

    auto l = chained_record("local");
    EXPECT_EQ(then_state(l, l.tasks[0], std::nullopt), "not run");
    l.tasks[0].then_exit_code = 3;
    EXPECT_EQ(then_state(l, l.tasks[0], std::nullopt), "failed (exit 3)");
    l.tasks[0].then_exit_code = 0;
    EXPECT_EQ(then_state(l, l.tasks[0], std::nullopt), "completed");

    l.then_script.clear();
    EXPECT_EQ(then_state(l, l.tasks[0], std::nullopt), "") << "nothing chained, nothing to report";
}

TEST(EvaluationChain, StateFileKeepsTheChain) {
    auto r = chained_record("slurm");
    r.tasks[0].then_job = "42";
    const auto back = record_from_line(record_to_line(r));
    EXPECT_EQ(back.then_script, "/evals/lm-eval.sbatch");
    EXPECT_EQ(back.tasks.at(0).then_job, "42");
    EXPECT_FALSE(back.tasks.at(0).then_exit_code);

    auto l = chained_record("local");
    l.tasks[0].then_exit_code = 1;
    EXPECT_EQ(record_from_line(record_to_line(l)).tasks.at(0).then_exit_code, 1);
}

TEST(EvaluationChain, StatusTableHasATHENColumnOnlyWhenChained) {
    std::vector<StatusRow> rows{{"run_7", "2000", "/o", TaskState::Converted, "41_3", "", "", ""}};
    EXPECT_EQ(render_status_table(rows).find("THEN"), std::string::npos);
    rows[0].then_job = "42";
    rows[0].then_state = "running";
    const auto table = render_status_table(rows);
    EXPECT_NE(table.find("THEN"), std::string::npos);
    EXPECT_NE(table.find("42 running"), std::string::npos);
    EXPECT_NE(render_status_json(rows).find("\"then_state\": \"running\""), std::string::npos);
}
