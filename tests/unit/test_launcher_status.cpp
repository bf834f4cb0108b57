// Status classification, squeue/sacct/sbatch output parsing, the state file and profiles.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/error.hpp"
#include "profile.hpp"
#include "state_file.hpp"
#include "status.hpp"
#include "submission.hpp"

using namespace m2h::launch;

namespace {

SubmissionRecord slurm_record(const std::string& job, const std::vector<std::string>& outputs) {
    SubmissionRecord r;
    r.executor = "slurm";
    r.job_id = job;
    r.log_name = "run";
    for (std::size_t i = 0; i < outputs.size(); ++i) r.tasks.push_back({i, std::to_string(100 * (i + 1)), "/in", outputs[i], {}});
    return r;
}

}  // namespace

TEST(LauncherStatus, ParsesSbatchSqueueAndSacct) {
    EXPECT_EQ(parse_sbatch_parsable("1234\n"), "1234");
    EXPECT_EQ(parse_sbatch_parsable("1234;leonardo\n"), "1234");
    EXPECT_EQ(parse_sbatch_parsable("note: your account is near quota\n77\n"), "77");
    EXPECT_FALSE(parse_sbatch_parsable("sbatch: error: invalid partition"));

    JobStates reasons;
    const auto q = parse_squeue("12|0|RUNNING|None\n12|1|PENDING|JobHeldUser\n13|N/A|COMPLETED|None\njunk\n", &reasons);
    EXPECT_EQ(reasons.at("12_1"), "JobHeldUser");
    EXPECT_EQ(q.at("12_0"), "RUNNING");
    EXPECT_EQ(q.at("12_1"), "PENDING");
    EXPECT_EQ(q.at("13"), "COMPLETED");
    EXPECT_EQ(q.size(), 3u);

    const auto a = parse_sacct("20_0|COMPLETED\n20_1|FAILED\n21|CANCELLED by 0\n20_[2-4%2]|PENDING\n22_[7,9]|PENDING\n");
    EXPECT_EQ(a.at("20_1"), "FAILED");
    EXPECT_EQ(a.at("21"), "CANCELLED");
    EXPECT_EQ(a.at("20_3"), "PENDING");
    EXPECT_EQ(a.at("20_4"), "PENDING");
    EXPECT_EQ(a.at("22_9"), "PENDING");
    EXPECT_EQ(a.count("22_8"), 0u);
}

TEST(LauncherStatus, Classification) {
    const auto rec = slurm_record("40", {"/o/iter_0000100"});
    Observation o;
    o.output_problem = "not converted";
    EXPECT_EQ(classify(o).state, TaskState::NotSubmitted);
    o.output_complete = true;
    EXPECT_EQ(classify(o).state, TaskState::Converted);  // whoever made it, a complete output is converted
    o.output_complete = false;
    o.record = &rec;
    o.task = &rec.tasks[0];
    EXPECT_EQ(classify(o).state, TaskState::Unknown);  // SLURM could not be asked
    o.slurm_answered = true;
    EXPECT_EQ(classify(o).state, TaskState::Failed);  // forgotten by SLURM, no output
    for (const auto& [state, expected] : std::vector<std::pair<std::string, TaskState>>{
             {"PENDING", TaskState::Queued}, {"REQUEUE_HOLD", TaskState::Queued}, {"RUNNING", TaskState::Running},
             {"COMPLETING", TaskState::Running}, {"FAILED", TaskState::Failed}, {"TIMEOUT", TaskState::Timeout},
             {"CANCELLED", TaskState::Failed}, {"OUT_OF_MEMORY", TaskState::Failed}, {"COMPLETED", TaskState::Failed}}) {
        o.slurm_state = state;
        EXPECT_EQ(classify(o).state, expected) << state;
    }
    o.slurm_state = "NODE_FAIL";  // a failed node ended it (the job scripts ask --no-requeue)
    EXPECT_EQ(classify(o).state, TaskState::Failed);
    EXPECT_NE(classify(o).detail.find("a node of its allocation failed"), std::string::npos);
    o.slurm_state = "PENDING";
    o.slurm_reason = "JobHeldUser";
    EXPECT_EQ(classify(o).detail, "JobHeldUser");
    o.slurm_reason.clear();
    SubmissionRecord local = rec;
    local.executor = "local";
    local.tasks[0].exit_code = 1;
    o.record = &local;
    o.task = &local.tasks[0];
    o.slurm_state.reset();
    EXPECT_EQ(classify(o).state, TaskState::Failed);
    EXPECT_EQ(classify(o).detail, "exit code 1");
    // A save in progress is `saving`, whatever an earlier submission of it did.
    o.saving = ".metadata";
    EXPECT_EQ(classify(o).state, TaskState::Saving);
    EXPECT_EQ(state_name(TaskState::Saving), "saving");
    o.output_complete = true;
    EXPECT_EQ(classify(o).state, TaskState::Converted);
}

TEST(LauncherStatus, LatestSubmissionOfEachOutputWins) {
    const std::vector<SubmissionRecord> recs{slurm_record("1", {"/o/a", "/o/b"}), slurm_record("2", {"/o/b"})};
    const auto latest = latest_tasks(recs);
    ASSERT_EQ(latest.size(), 2u);
    EXPECT_EQ(latest[0].first, "/o/a");
    EXPECT_EQ(latest[0].second.record->job_id, "1");
    EXPECT_EQ(latest[1].second.record->job_id, "2");
    EXPECT_EQ(job_key(*latest[1].second.record, *latest[1].second.task), "2_0");
}

TEST(LauncherStatus, StateFileRoundTripAndDamagedLines) {
    auto r = slurm_record("99", {"/save/run 'x'/hf/iter_0000100"});
    r.log = "/logs/run 'x'.out";
    r.tasks[0].exit_code = 3;
    const auto back = record_from_line(record_to_line(r));
    EXPECT_EQ(back.job_id, "99");
    EXPECT_EQ(back.log, r.log);
    EXPECT_EQ(back.tasks[0].output, r.tasks[0].output);
    EXPECT_EQ(back.tasks[0].exit_code, 3);

    const auto path = std::filesystem::path(::testing::TempDir()) / "m2h_state.jsonl";
    std::filesystem::remove(path);
    EXPECT_TRUE(load_records(path.string()).empty());
    append_record(path.string(), r);
    { std::ofstream(path, std::ios::app) << "{\"executor\": \"slurm\", \"job_"; }  // a cut-off last line
    append_record(path.string(), slurm_record("100", {"/o"}));
    const auto loaded = load_records(path.string());
    ASSERT_EQ(loaded.size(), 2u);  // the cut line is skipped, the record after it is not lost
    EXPECT_EQ(loaded[0].job_id, "99");
    EXPECT_EQ(loaded[1].job_id, "100");
}

TEST(LauncherProfile, KeysValuesAndErrors) {
    const std::vector<std::string> allowed{"account", "partition", "container-image", "max-parallel-jobs", "sbatch-arg"};
    const auto p = parse_profile(R"({"account": "EUHPC_E03_068", "container_image": "/img.sif", "max-parallel-jobs": 8,
                                     "sbatch_arg": ["--gres=gpu:0", "--exclusive"], "description": "x"})",
                                 "leonardo.json", allowed);
    EXPECT_EQ(p.at("account").values, std::vector<std::string>{"EUHPC_E03_068"});
    EXPECT_EQ(p.at("container-image").values, std::vector<std::string>{"/img.sif"});
    EXPECT_EQ(p.at("max-parallel-jobs").values, std::vector<std::string>{"8"});
    EXPECT_EQ(p.at("sbatch-arg").values.size(), 2u);
    try {
        parse_profile(R"({"acount": "x"})", "leonardo.json", allowed);
        FAIL();
    } catch (const m2h::Error& e) {
        EXPECT_EQ(std::string(e.what()).rfind("leonardo.json: unknown key \"acount\"", 0), 0u) << e.what();
    }
    EXPECT_THROW(parse_profile("[1]", "f.json", allowed), m2h::Error);
    EXPECT_THROW(parse_profile("{", "f.json", allowed), m2h::Error);
    EXPECT_THROW(parse_profile(R"({"account": {"a": 1}})", "f.json", allowed), m2h::Error);
}

TEST(LauncherStatus, StoppedByTheTimeLimitFromTheJobsErrorLog) {
    // The engine's line for SLURM's warning signal or the limit's SIGTERM, alone or among srun's lines.
    EXPECT_TRUE(stopped_by_time_limit(
        "megatron2hf: error: SIGUSR1: stopped before the conversion finished; its partial output is removed\n"));
    EXPECT_TRUE(stopped_by_time_limit(
        "srun: Job step aborted\n0: megatron2hf: error: SIGTERM: stopped before the conversion finished; its "
        "partial output is removed\nsrun: error: node0042: task 0: Exited with exit code 1\n"));
    // Not the time limit: a user's Ctrl-C, another error, a kill without the engine's line, nothing.
    EXPECT_FALSE(stopped_by_time_limit(
        "megatron2hf: error: SIGINT: stopped before the conversion finished; its partial output is removed\n"));
    EXPECT_FALSE(stopped_by_time_limit("megatron2hf: error: /ckpt/iter_0000200/mp_rank_01: missing rank file\n"));
    EXPECT_FALSE(stopped_by_time_limit("srun: error: node0042: task 1: User defined signal 1\n"));
    EXPECT_FALSE(stopped_by_time_limit(""));
}
