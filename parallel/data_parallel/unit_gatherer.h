// The interface through which a model drives the data-parallel gathers of its parameters, in
// units (the embedding, each transformer block, the final norm + head) numbered in forward order.
// Under ZeRO-3 (parallel.zero 3) the parameters are sharded over the data-parallel group between
// uses: the model asks for a unit's parameters to be whole before it computes with them,
// announces the units it will need next (so their all-gathers overlap the current unit's
// compute) and hands a unit back once its forward is done. Under ZeRO-1 and 2 the parameters
// stay whole, but the all-gather of the weights updated at the end of a step is still on its
// way when the next forward starts: Gather(unit) then waits for the unit's share of it, so the
// gathers of later units overlap the compute of earlier ones; the other calls do nothing.
// GradReducer implements it; the model only sees this interface.
#pragma once

namespace tessera::parallel {

class UnitGatherer {
 public:
  virtual ~UnitGatherer() = default;
  // Makes the unit's parameters whole (all-gathered into their storage), waiting for a gather
  // already under way. Collective over the data-parallel group, in the same order on every rank.
  virtual void Gather(int unit) = 0;
  // Starts the unit's all-gather without waiting (a no-op if it is gathered or on its way).
  virtual void Prefetch(int unit) = 0;
  // Frees the unit's gathered parameters (their storage shrinks to 0 bytes; views stay valid and
  // see the data again once gathered). A unit that is kept gathered ignores it.
  virtual void Release(int unit) = 0;
  // Frees every unit (the end of a backward pass: whatever a hook did not release).
  virtual void ReleaseAll() = 0;
  // Gathers every unit and keeps them gathered (Release and ReleaseAll do nothing) until
  // EndHold, which frees them. For passes whose number of forwards differs between the ranks of
  // the data-parallel group (evaluation splits its batches over them): per-unit gathers would
  // not match up. Collective over the data-parallel group.
  virtual void HoldAll() = 0;
  virtual void EndHold() = 0;
  // How many units ahead to prefetch (parallel.zero3_prefetch).
  virtual int prefetch() const = 0;
  // Whether units are freed after use and must be gathered again before their backward (zero
  // 3). Otherwise (zero 1, 2) a unit, once waited for, stays whole until the next update.
  virtual bool releases_units() const = 0;
  // Whether every unit's parameters are whole now: no gather still on its way, none released.
  // Anything that reads the weights outside the model's forward checks it.
  virtual bool AllGathered() const = 0;
};

}  // namespace tessera::parallel
