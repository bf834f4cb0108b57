// Watch mode's pure decisions: durations and deadlines, the training job of a log, when training has ended,
// when the watch is over, and the self-resubmitting job's script and arguments.
#include <gtest/gtest.h>

#include "common/error.hpp"
#include "launch_plan.hpp"
#include "watch.hpp"

using namespace m2h::launch;

TEST(LauncherWatch, Durations) {
    EXPECT_EQ(parse_duration_s("90", "--interval"), 90);
    EXPECT_EQ(parse_duration_s("90s", "--interval"), 90);
    EXPECT_EQ(parse_duration_s("10m", "--interval"), 600);
    EXPECT_EQ(parse_duration_s("2h", "--interval"), 7200);
    EXPECT_EQ(parse_duration_s("3d", "--interval"), 3 * 86400);
    for (const char* bad : {"", "m", "0", "-5m", "10x", "1.5h", "10 m"}) EXPECT_THROW(parse_duration_s(bad, "--interval"), m2h::Error) << bad;
}

TEST(LauncherWatch, UntilIsATimeOrADurationFromNow) {
    EXPECT_EQ(parse_until("12h", 1000), 1000 + 12 * 3600);
    const std::int64_t t = 1'800'000'000;
    EXPECT_EQ(parse_until(format_local_time(t), 0), t);
    EXPECT_EQ(parse_until(format_local_time(t).substr(0, 16), 0), t - t % 60) << "seconds may be left out";
    EXPECT_THROW(parse_until("2026-13-45", 0), m2h::Error);
    EXPECT_THROW(parse_until("tomorrow", 0), m2h::Error);
}

TEST(LauncherWatch, TrainingJobFromTheLogName) {
    EXPECT_EQ(training_job_of("opensci-1.7b_1234567"), "1234567");
    EXPECT_EQ(training_job_of("slurm-42"), "42");
    EXPECT_EQ(training_job_of("train-run-7"), "7");
    EXPECT_FALSE(training_job_of("opensci"));
    EXPECT_FALSE(training_job_of("run_v2"));
    EXPECT_FALSE(training_job_of("run_"));
}

TEST(LauncherWatch, TrainingEndsWithItsJobWhereSlurmKnowsIt) {
    TrainingObservation o;
    o.job_id = "77";
    o.slurm_answered = true;
    o.end_line = true;  // printed before the final save: not enough while the job runs
    o.log_quiet_s = 10'000;
    o.job_state = "RUNNING";
    EXPECT_FALSE(training_state(o, 60).ended);
    o.job_state = "COMPLETING";
    EXPECT_FALSE(training_state(o, 60).ended);
    o.job_state = "FAILED";
    EXPECT_TRUE(training_state(o, 60).ended) << "a crashed training run ends the watch too";
    o.job_state.reset();
    o.end_line = false;
    EXPECT_TRUE(training_state(o, 60).ended) << "squeue answered and no longer lists the job";
}

TEST(LauncherWatch, WithoutSlurmTheEndLineAndAQuietLogEndTraining) {
    TrainingObservation o;
    o.job_id = "77";  // a number in the name, but no SLURM to ask
    o.log_quiet_s = 10'000;
    EXPECT_FALSE(training_state(o, 60).ended);
    o.end_line = true;
    o.log_quiet_s = 59;
    EXPECT_FALSE(training_state(o, 60).ended) << "the final save may still be running";
    o.log_quiet_s = 60;
    EXPECT_TRUE(training_state(o, 60).ended);
}

TEST(LauncherWatch, VerdictWaitsForEveryRunAndItsConversions) {
    const TrainingState ended{true, "job ended"}, going{false, "job RUNNING"};
    EXPECT_TRUE(watch_verdict({{"a", ended, 0}, {"b", ended, 0}}, 0, std::nullopt).done);
    const auto v = watch_verdict({{"a", ended, 0}, {"b", ended, 2}}, 0, std::nullopt);
    EXPECT_FALSE(v.done);
    EXPECT_NE(v.why.find("b: 2 iteration(s)"), std::string::npos) << v.why;
    EXPECT_FALSE(watch_verdict({{"a", going, 0}}, 0, std::nullopt).done);
    EXPECT_TRUE(watch_verdict({{"a", going, 3}}, 500, 500).done) << "--until ends it whatever is left";
    EXPECT_FALSE(watch_verdict({{"a", going, 3}}, 499, 500).done);
}

TEST(LauncherWatch, WithoutOptionInBothSpellings) {
    const std::vector<std::string> args{"--until", "3d", "--interval=5m", "--as-slurm-job", "--until=4d", "--x", "y"};
    EXPECT_EQ(without_option(args, "until", true), (std::vector<std::string>{"--interval=5m", "--as-slurm-job", "--x", "y"}));
    EXPECT_EQ(without_option(args, "as-slurm-job", false),
              (std::vector<std::string>{"--until", "3d", "--interval=5m", "--until=4d", "--x", "y"}));
}

TEST(LauncherWatch, JobNameIsStablePerFolderAndTheScriptQuotesEverything) {
    EXPECT_EQ(watch_job_name("/scratch/convert"), watch_job_name("/scratch/convert"));
    EXPECT_NE(watch_job_name("/scratch/convert"), watch_job_name("/scratch/convert2"));
    EXPECT_TRUE(watch_job_name("/x").starts_with("m2h-watch-"));
    WatchJobSpec spec{"m2h-watch-0123abcd", "proj", "cpu", "", "/home/me/it's here", "/opt/m2h/bin/megatron2hf-launch",
                      {"--train_logs_dir_or_path", "logs; rm -rf /", "--round", "/c/watch.sbatch"}, "test"};
    const auto script = render_watch_script(spec);
    EXPECT_NE(script.find("#SBATCH --job-name=m2h-watch-0123abcd\n"), std::string::npos);
    EXPECT_NE(script.find("#SBATCH --account=proj\n"), std::string::npos);
    EXPECT_EQ(script.find("--qos"), std::string::npos);
    EXPECT_NE(script.find("cd '/home/me/it'\\''s here'\n"), std::string::npos) << script;
    EXPECT_NE(script.find("exec '/opt/m2h/bin/megatron2hf-launch' watch '--train_logs_dir_or_path' 'logs; rm -rf /'"),
              std::string::npos) << script;
    spec.partition = "cpu\n#SBATCH --uid=0";
    EXPECT_THROW(render_watch_script(spec), m2h::Error);
}

TEST(LauncherWatch, AnIterationIsSubmittedAtMostMaxAttemptsTimes) {
    LogPlan p;
    p.name = "run_1";
    for (const std::int64_t n : {100, 200, 300}) {
        p.todo.push_back({false, n, "/ckpt/iter_" + std::to_string(n), false, ""});
        p.todo_outputs.push_back("/save/run_1/hf/" + std::to_string(n));
    }
    SubmissionRecord twice, once;
    twice.tasks.push_back({0, "100", "/ckpt/iter_100", "/save/run_1/hf/100", 1, "", std::nullopt});
    once.tasks.push_back({0, "100", "/ckpt/iter_100", "/save/run_1/hf/100", 1, "", std::nullopt});
    once.tasks.push_back({1, "200", "/ckpt/iter_200", "/save/run_1/hf/200", 1, "", std::nullopt});
    std::vector<LogPlan> work{p};
    drop_exhausted(work, {twice, once}, 2);
    EXPECT_EQ(work[0].todo_outputs, (std::vector<std::string>{"/save/run_1/hf/200", "/save/run_1/hf/300"}));
    EXPECT_EQ(work[0].todo.size(), 2u);
    EXPECT_EQ(work[0].todo[0].number, 200);
    EXPECT_EQ(work[0].given_up, 1u);
}
