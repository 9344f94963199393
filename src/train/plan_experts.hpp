#pragma once
// `parallax plan`'s pieces of mode "parallax" (DESIGN §6, §7), shared by the learners of plain
// and of pipelined islands: what a view takes in memory and in a message, the sketches a
// learner sends per step, a home's queue of one step's sketches, and the expert workers' role.
#include "config/config.hpp"  // defines: Config
#include "train/plan.hpp"     // defines: RolePlan

namespace px {

// One remote expert's view in a learner's memory (ternary: 2-bit codes + an fp32 scale per
// output unit; lowrank: fp32 factors; full: fp32 weights).
double view_bytes(const Config& cfg);
// One expert's entry of a view message: a ternary or full snapshot, or a low-rank delta at
// update_rank.
double view_message_bytes(const Config& cfg);
// Rows of one sketch (one per micro-batch and remote expert; uniform routing assumed: B T k / E
// rows per expert and batch, at most ceil(tokens / micro-batches)).
double sketch_rows(const Config& cfg);
// A learner's expert-signal bytes per step into bytes_per_step (tiers sketch | adapter |
// control): its sketches (or adapter deltas) of `remote` experts homed elsewhere, one bundle
// header per home (`homes` of them).
void add_signal_bytes(const Config& cfg, double remote, double homes, std::vector<double>& bytes_per_step);
// A home's sketches of one step: every source's sketches of each of its `homed` experts as
// received, then one expert's rows decoded and its forward and backward over them (0 unless
// the sketch signal trains).
double sketch_queue_bytes(const Config& cfg, double homed, double sources);
// The expert workers (topology.expert_workers > 0): masters, gradient sums and AdamW of 1/W
// of the routed experts; data_parts: the learners' parts of the data (each a source of
// sketches, and the ranks that receive each expert's view).
RolePlan expert_worker_plan(const Config& cfg, double params_experts, int data_parts);

}  // namespace px
