#pragma once
// The home side of the sketch signal (DESIGN §7): a home holds the master weights of its
// experts; for every accepted sketch it runs the expert's forward on the sketch's X with the
// master weights and the backward with its dY, and ADDS the weight gradient into the expert's
// gradient buffer. What the caller does with the sum (divide by the number of contributing
// learner ranks, apply AdamW every expert_update_every steps, wait for every island in
// deterministic mode) is the training loop's business.
//
// Sketches are verified first (sketch_verify: checksum, shape, handle, staleness,
// finiteness); a rejected one is counted in tally() by reason, logged by the caller, and
// changes nothing. receive() queues accepted rows; accumulate() does the arithmetic for
// everything queued (so a home can batch many sketches per expert into one product).
#include <cstdint>
#include <functional>
#include <unordered_map>
#include <vector>

#include "ops/cpu/cpu_ops.hpp"          // defines: ExpertAct
#include "sketch/sketch_handle.hpp"     // defines: SketchHandleTable
#include "wire/sketch_wire.hpp"       // defines: SketchStatus, SketchTally

namespace px {

// The largest |value| of an accepted sketch row (X or dY): activations and their gradients are
// orders of magnitude below it, and the home's products of rows, weights and row counts stay
// finite in fp32 (|X| = 6e37 in a verified bf16 sketch made a home's gradient inf).
inline constexpr float kSketchValueBound = 1e8f;

// One expert homed here: master weights (read) and gradient buffers (accumulated).
// W1, W3 [d, h], W2 [h, d]; W3 / dW3 null for relu2.
struct HomeExpertSlot {
  int moe_layer = 0, expert = 0;
  const float* W1 = nullptr;
  const float* W3 = nullptr;
  const float* W2 = nullptr;
  float* dW1 = nullptr;
  float* dW3 = nullptr;
  float* dW2 = nullptr;
};

// The weight gradient of one expert over `rows` rows (X, dY [rows, d]), ADDED into the slot's
// dW1, dW3, dW2: the expert's forward on X with the slot's weights, then its backward with dY
// (the home's arithmetic on the CPU). scratch: grown on demand.
struct ExpertRowsScratch {
  std::vector<float> y, a, b, act, dx, dact, da, db;
};
void expert_rows_gradient(const HomeExpertSlot& slot, const float* X, const float* dY, int rows,
                          int d, int h, px::cpu::ExpertAct act, ExpertRowsScratch& scratch);

class SketchHome {
 public:
  // Where accumulate() sends an expert's decoded rows (slot index, X, dY, rows): by default
  // expert_rows_gradient into the slot's gradient buffers; a home on a device (experts/
  // home_device.hpp) computes them there instead.
  using RowSink = std::function<void(int slot, const float* X, const float* dY, int rows)>;
  void set_row_sink(RowSink sink) { sink_ = std::move(sink); }
  // `key`: the run's handle key; `max_rows` = [sketch] tokens; `max_staleness` likewise.
  SketchHome(int d, int h, px::cpu::ExpertAct act, SketchKey key, int max_rows,
             int max_staleness, std::vector<HomeExpertSlot> slots);

  // Verifies one sketch against the home's step and queues its rows. Never throws on bad
  // bytes: returns the status, which is also counted.
  SketchStatus receive(const uint8_t* bytes, size_t size, int64_t home_step);

  // Runs the queued rows of every expert through the master weights and adds their weight
  // gradients; returns the number of rows processed and clears the queue. The queue holds the
  // sketches as received (their codes); an expert's rows are decoded when it runs, so at most
  // one expert's rows are held in fp32.
  size_t accumulate();

  const SketchTally& tally() const { return tally_; }
  size_t queued_rows() const;
  const std::vector<HomeExpertSlot>& slots() const { return slots_; }

 private:
  int d_model_, hidden_;
  px::cpu::ExpertAct act_kind_;
  int max_rows_, max_staleness_;
  SketchHandleTable table_;                   // handle -> (layer, expert), refuses collisions
  std::unordered_map<uint64_t, int> slot_of_;  // handle -> index into slots_
  std::vector<HomeExpertSlot> slots_;
  std::vector<int> slot_of_expert_;  // (m, e) -> slot, dense over the registered ids
  struct Queued {
    std::vector<uint8_t> bytes;  // the sketch as received
    SketchView view;             // into bytes (rebased when used: the vector may have moved)
    const uint8_t* base;         // bytes.data() when view was made
  };
  std::vector<std::vector<Queued>> queued_;  // per slot, in arrival order
  std::vector<float> one_x_, one_dy_, slot_x_, slot_dy_;  // decoded rows: one sketch, one slot
  SketchTally tally_;
  ExpertRowsScratch scratch_;
  RowSink sink_;
};

}  // namespace px
