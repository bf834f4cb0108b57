// What the launcher tells the model card about a training log: its name, the SLURM job id (printed in the log,
// else from the file name), and the wall time between its first and last timestamp.
#include <gtest/gtest.h>

#include "training_provenance.hpp"

using namespace m2h::launch;

TEST(LauncherTrainingProvenance, JobIdFromTheLogOrItsName) {
    EXPECT_EQ(training_provenance("x\nSLURM_JOB_ID=8812345\n", "/logs/run.out").job_id, "8812345");
    EXPECT_EQ(training_provenance("SLURM_JOBID: 77\n", "/logs/slurm-123.out").job_id, "77");
    EXPECT_EQ(training_provenance("", "/logs/slurm-1234567.out").job_id, "1234567");
    EXPECT_EQ(training_provenance("", "/logs/opensci-1.7b_9876543.out").job_id, "9876543");
    EXPECT_EQ(training_provenance("", "/logs/run-9876543_12.out").job_id, "9876543");  // an array task %A_%a
    EXPECT_EQ(training_provenance("", "/logs/llama_7.out").job_id, "");
    EXPECT_EQ(training_provenance("", "/logs/llama_7.out").log_name, "llama_7.out");
}

TEST(LauncherTrainingProvenance, WallTimeBetweenTheFirstAndLastTimestamp) {
    const std::string log =
        "using world size: 8\n"
        "[before the start of training step] datetime: 2025-02-27 23:58:00\n"
        " [2025-02-28 00:01:05] iteration       10/    1000 | consumed samples: 640\n"
        "saving checkpoint at iteration      10 to /ckpt in torch format\n"
        " [2025-02-28 06:03:59] iteration     1000/    1000 | consumed samples: 64000\n"
        "[after training is done] datetime: 2025-02-28 06:04:10 \n"
        "exiting\n";
    EXPECT_EQ(training_provenance(log, "a.out").wall_time, "6 h 06 min (2025-02-27 23:58:00 to 2025-02-28 06:04:10)");
    EXPECT_EQ(training_provenance("[2025-02-28 00:01:05] once\n", "a.out").wall_time, "");
    EXPECT_EQ(training_provenance("no times\n", "a.out").wall_time, "");
}

TEST(LauncherTrainingProvenance, EngineArgumentsOnlyForWhatIsKnown) {
    EXPECT_EQ(model_card_arguments({"r.out", "", ""}), std::vector<std::string>{"--model-card-field=training_log=r.out"});
    EXPECT_EQ(model_card_arguments({"r.out", "5", "1 h 00 min (a to b)"}).back(),
              "--model-card-field=training_wall_time=1 h 00 min (a to b)");
}
