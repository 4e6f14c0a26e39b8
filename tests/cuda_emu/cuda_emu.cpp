// Scheduler of the CUDA emulation: fibers, barriers, warp collectives and the
// checks that turn synchronization faults into errors (see cuda_emu.h).
#include "cuda_emu.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <sstream>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define FG_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FG_EMU_ASAN 1
#endif
#endif
#if defined(FG_EMU_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

// A context switch happens at every barrier of every thread, so it has to be
// cheap: on x86-64 a few instructions save and restore the callee-saved
// registers. swapcontext also saves the signal mask with a system call on each
// switch; it remains the portable fallback (and can be forced with
// FG_EMU_USE_UCONTEXT to check that path).
#if defined(__x86_64__) && !defined(FG_EMU_USE_UCONTEXT)
#define FG_EMU_X86_64_SWITCH 1
#else
#include <ucontext.h>
#endif

namespace fg_emu {
namespace detail {

Builtins builtins;

namespace {

constexpr size_t kStackBytes = 256 * 1024;
constexpr unsigned kMaxBlockThreads = 1024;
// The most dynamic shared memory a block may have on any current GPU
// (227 KiB on Hopper, after opting in).
constexpr size_t kMaxSharedBytes = 227 * 1024;

enum class State : uint8_t { ready, at_block, at_warp, exited };

// Thrown into a waiting fiber to unwind it when its launch has failed.
struct Cancelled {};

struct Fiber {
  void* sp = nullptr;  // saved stack pointer while switched out
#if !defined(FG_EMU_X86_64_SWITCH)
  ucontext_t context;
#endif
  unsigned char* mapping = nullptr;
  size_t mapping_bytes = 0;
  unsigned char* stack_lo = nullptr;  // usable stack, above the guard page
  size_t stack_bytes = 0;
  size_t stack_offset = 0;  // unused bytes at the top of the stack (see allocate_stack)
  unsigned tid = 0;         // linear thread id in the block
  uint3 idx{0, 0, 0};
  State state = State::ready;
  bool runnable = false;
  bool started = false;
  bool stack_dirty = false;  // abandoned mid-run: its frames never returned
  WarpOp* op = nullptr;      // the collective it waits in
  OpKind block_kind = OpKind::syncthreads;
  int predicate = 0;
  int block_result = 0;
  std::exception_ptr error;
  void* fake_stack = nullptr;  // AddressSanitizer's per-fiber state

  Fiber() = default;
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;
  ~Fiber() {
    if (mapping != nullptr) munmap(mapping, mapping_bytes);
  }
};

struct Scheduler {
  std::vector<std::unique_ptr<Fiber>> pool;  // kept across launches: stacks are reused
  Fiber* current = nullptr;                  // the running fiber; null in the scheduler
  bool cancelling = false;
  int releasing_warp = -1;  // warp whose collective is being performed, for messages
  void* main_sp = nullptr;
#if !defined(FG_EMU_X86_64_SWITCH)
  ucontext_t main_context;
#endif
  const void* main_stack_bottom = nullptr;
  size_t main_stack_bytes = 0;
  void* main_fake_stack = nullptr;
  Invoke invoke = nullptr;
  const void* body = nullptr;
  unsigned char* shared = nullptr;
  size_t shared_bytes = 0;
  LaunchStats stats;
};

Scheduler g;
std::mutex launch_mutex;
thread_local bool t_in_launch = false;

// ---------------------------------------------------------------- sanitizer hooks

inline void asan_start(void** fake_stack_save, const void* bottom, size_t bytes) {
#if defined(FG_EMU_ASAN)
  __sanitizer_start_switch_fiber(fake_stack_save, bottom, bytes);
#else
  (void)fake_stack_save, (void)bottom, (void)bytes;
#endif
}

inline void asan_finish(void* fake_stack_save, const void** bottom_old, size_t* bytes_old) {
#if defined(FG_EMU_ASAN)
  __sanitizer_finish_switch_fiber(fake_stack_save, bottom_old, bytes_old);
#else
  (void)fake_stack_save, (void)bottom_old, (void)bytes_old;
#endif
}

}  // namespace
}  // namespace detail
}  // namespace fg_emu

// ---------------------------------------------------------------- context switch

// Takes the fiber as void*: its type is private to this file.
extern "C" __attribute__((visibility("hidden"), noreturn)) void fg_emu_fiber_entry(void* fiber);

#if defined(FG_EMU_X86_64_SWITCH)
extern "C" {
// Saves the callee-saved registers on the current stack, stores the stack
// pointer in *save_sp, and resumes the stack load_sp the same way. The SSE
// and x87 control words are not switched: every fiber runs on the thread's
// one floating-point environment, which kernel code does not change (and
// restoring the x87 control word made up half the cost of a switch).
void fg_emu_switch(void** save_sp, void* load_sp);
// First code a new fiber runs (reached by fg_emu_switch's ret): calls
// fg_emu_fiber_entry with the fiber, which the initial frame put in rbx.
void fg_emu_fiber_start();
}

asm(R"(
  .pushsection .text
  .p2align 4
  .globl fg_emu_switch
  .hidden fg_emu_switch
  .type fg_emu_switch, @function
fg_emu_switch:
  .cfi_startproc
  pushq %rbp
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %rbp, 0
  pushq %rbx
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %rbx, 0
  pushq %r12
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %r12, 0
  pushq %r13
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %r13, 0
  pushq %r14
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %r14, 0
  pushq %r15
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %r15, 0
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  .cfi_adjust_cfa_offset -8
  .cfi_restore %r15
  popq %r14
  .cfi_adjust_cfa_offset -8
  .cfi_restore %r14
  popq %r13
  .cfi_adjust_cfa_offset -8
  .cfi_restore %r13
  popq %r12
  .cfi_adjust_cfa_offset -8
  .cfi_restore %r12
  popq %rbx
  .cfi_adjust_cfa_offset -8
  .cfi_restore %rbx
  popq %rbp
  .cfi_adjust_cfa_offset -8
  .cfi_restore %rbp
  ret
  .cfi_endproc
  .size fg_emu_switch, .-fg_emu_switch

  .p2align 4
  .globl fg_emu_fiber_start
  .hidden fg_emu_fiber_start
  .type fg_emu_fiber_start, @function
fg_emu_fiber_start:
  .cfi_startproc
  .cfi_undefined %rip
  movq %rbx, %rdi
  call fg_emu_fiber_entry
  ud2
  .cfi_endproc
  .size fg_emu_fiber_start, .-fg_emu_fiber_start
  .popsection
)");
#endif

namespace fg_emu {
namespace detail {
namespace {

#if !defined(FG_EMU_X86_64_SWITCH)
void ucontext_entry() { fg_emu_fiber_entry(g.current); }
#endif

// Gives a fiber a fresh initial frame so that its next resumption starts the kernel.
void prepare(Fiber* f) {
#if defined(FG_EMU_ASAN)
  // An exited fiber leaves fg_emu_fiber_entry's frame behind without
  // returning from it, so that frame's redzones are still poisoned; the new
  // initial frame is written over them.
  constexpr size_t kEntryFrames = 16 * 1024;
  ASAN_UNPOISON_MEMORY_REGION(f->stack_lo + f->stack_bytes - kEntryFrames, kEntryFrames);
#endif
#if defined(FG_EMU_X86_64_SWITCH)
  // Frame popped by fg_emu_switch, from the lowest address: r15, r14, r13,
  // r12, rbx (the fiber), rbp (0 ends frame-pointer walks), return address;
  // after the ret the stack pointer is 16-byte aligned, as a call
  // instruction expects.
  const uintptr_t top =
      reinterpret_cast<uintptr_t>(f->stack_lo + f->stack_bytes - f->stack_offset) & ~uintptr_t{15};
  auto* frame = reinterpret_cast<uint64_t*>(top - 72);
  frame[0] = frame[1] = frame[2] = frame[3] = 0;
  frame[4] = reinterpret_cast<uint64_t>(f);
  frame[5] = 0;
  frame[6] = reinterpret_cast<uint64_t>(&fg_emu_fiber_start);
  frame[7] = frame[8] = 0;
  f->sp = frame;
#else
  if (getcontext(&f->context) != 0) throw Error("fg_emu: getcontext failed");
  f->context.uc_stack.ss_sp = f->stack_lo;
  f->context.uc_stack.ss_size = f->stack_bytes - f->stack_offset;
  f->context.uc_link = nullptr;
  makecontext(&f->context, &ucontext_entry, 0);
#endif
}

void allocate_stack(Fiber* f, size_t index) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t bytes = kStackBytes + page;
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (p == MAP_FAILED) throw Error("fg_emu: cannot map a fiber stack");
  // A guard page below the stack: an overflow faults instead of silently
  // writing into the neighbouring fiber's stack.
  if (mprotect(p, page, PROT_NONE) != 0) {
    munmap(p, bytes);
    throw Error("fg_emu: cannot protect a fiber stack's guard page");
  }
  f->mapping = static_cast<unsigned char*>(p);
  f->mapping_bytes = bytes;
  f->stack_lo = f->mapping + page;
  f->stack_bytes = kStackBytes;
  // The stacks are page aligned, so their tops would all map to the same few
  // L1 cache sets and evict one another at every switch; starting each one a
  // different number of cache lines below its top spreads them out.
  f->stack_offset = index * 7 % 64 * 64;
}

void resume(Fiber* f) {
  g.current = f;
  builtins.thread_idx = f->idx;
  f->started = true;
  ++g.stats.resumes;
  asan_start(&g.main_fake_stack, f->stack_lo, f->stack_bytes);
#if defined(FG_EMU_X86_64_SWITCH)
  fg_emu_switch(&g.main_sp, f->sp);
#else
  swapcontext(&g.main_context, &f->context);
#endif
  asan_finish(g.main_fake_stack, nullptr, nullptr);
  g.current = nullptr;
}

// Called by a fiber: back to the scheduler until a barrier releases it.
void suspend(Fiber* f) {
  asan_start(&f->fake_stack, g.main_stack_bottom, g.main_stack_bytes);
#if defined(FG_EMU_X86_64_SWITCH)
  fg_emu_switch(&f->sp, g.main_sp);
#else
  swapcontext(&f->context, &g.main_context);
#endif
  asan_finish(f->fake_stack, &g.main_stack_bottom, &g.main_stack_bytes);
  if (g.cancelling) throw Cancelled{};
}

// ---------------------------------------------------------------- messages

std::string format_uint3(unsigned x, unsigned y, unsigned z) {
  char text[48];
  std::snprintf(text, sizeof(text), "(%u,%u,%u)", x, y, z);
  return text;
}

std::string block_name() {
  return "block " + format_uint3(builtins.block_idx.x, builtins.block_idx.y, builtins.block_idx.z);
}

std::string thread_name(const Fiber* f) {
  return "thread " + format_uint3(f->idx.x, f->idx.y, f->idx.z) + " [warp " +
         std::to_string(f->tid / 32) + " lane " + std::to_string(f->tid % 32) + "]";
}

std::string what_it_waits_on(const Fiber* f) {
  switch (f->state) {
    case State::exited:
      return "has exited";
    case State::at_block:
      switch (f->block_kind) {
        case OpKind::syncthreads_count:
          return "waits at __syncthreads_count";
        case OpKind::syncthreads_and:
          return "waits at __syncthreads_and";
        case OpKind::syncthreads_or:
          return "waits at __syncthreads_or";
        default:
          return "waits at __syncthreads";
      }
    case State::at_warp:
      return std::string("waits at ") + f->op->name;
    case State::ready:
      break;
  }
  return "is runnable";
}

// Threads [first, first + count), grouped into runs of consecutive threads
// that wait on the same thing, one line per run.
std::string describe_threads(unsigned first, unsigned count) {
  std::ostringstream out;
  unsigned begin = first;
  while (begin < first + count) {
    const Fiber* f = g.pool[begin].get();
    const std::string what = what_it_waits_on(f);
    unsigned end = begin + 1;
    while (end < first + count && what_it_waits_on(g.pool[end].get()) == what) ++end;
    const Fiber* last = g.pool[end - 1].get();
    out << "\n  ";
    if (end - begin == 1) {
      out << thread_name(f);
    } else {
      out << "threads " << format_uint3(f->idx.x, f->idx.y, f->idx.z) << " .. "
          << format_uint3(last->idx.x, last->idx.y, last->idx.z) << " [warp " << f->tid / 32
          << " lanes " << f->tid % 32 << "-" << last->tid % 32 << "]";
    }
    out << " " << what;
    begin = end;
  }
  return out.str();
}

[[noreturn]] void fail_in_block(const std::string& message) {
  throw Error("fg_emu: " + block_name() + ": " + message);
}

// ---------------------------------------------------------------- barriers

void perform_shuffle(WarpOp* const* lanes) {
  const int width = lanes[0]->width;
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    fail_in_block(std::string(lanes[0]->name) + ": width " + std::to_string(width) +
                  " is not a power of 2 in [1, 32]");
  // The PTX shfl rules: a lane reads lane j of the warp when j lies in the
  // allowed range, else it keeps its own value. Width w splits the warp into
  // segments of w lanes; up and down stay inside the lane's segment, xor may
  // also read earlier segments, idx wraps the source lane into the segment.
  for (int lane = 0; lane < 32; ++lane) {
    const int seg_first = lane & ~(width - 1), seg_last = seg_first + width - 1;
    const int64_t arg = lanes[lane]->arg;
    int64_t j = lane;
    bool valid = true;
    switch (lanes[0]->kind) {
      case OpKind::shfl_idx:
        j = seg_first + (arg & (width - 1));
        break;
      case OpKind::shfl_up:
        j = lane - static_cast<int64_t>(static_cast<unsigned>(arg));
        valid = j >= seg_first;
        break;
      case OpKind::shfl_down:
        j = lane + static_cast<int64_t>(static_cast<unsigned>(arg));
        valid = j <= seg_last;
        break;
      default:  // shfl_xor
        j = static_cast<int64_t>(static_cast<unsigned>(lane) ^ static_cast<unsigned>(arg));
        valid = j <= seg_last;
        break;
    }
    lanes[lane]->result = valid ? lanes[j]->value : lanes[lane]->value;
  }
}

void perform_vote(WarpOp* const* lanes) {
  unsigned ballot = 0;
  for (int lane = 0; lane < 32; ++lane)
    if (lanes[lane]->value != 0) ballot |= 1u << lane;
  uint64_t result = ballot;
  if (lanes[0]->kind == OpKind::any) result = ballot != 0;
  if (lanes[0]->kind == OpKind::all) result = ballot == 0xffffffffu;
  for (int lane = 0; lane < 32; ++lane) lanes[lane]->result = result;
}

bool same_collective(const WarpOp& a, const WarpOp& b) {
  return a.kind == b.kind && (a.name == b.name || std::strcmp(a.name, b.name) == 0) &&
         a.size == b.size && a.tag == b.tag;
}

// All 32 lanes of the warp starting at thread `first` wait in a collective:
// checks that it is one collective with consistent arguments, performs it
// and makes the lanes runnable.
void release_warp(unsigned first) {
  WarpOp* lanes[32];
  for (unsigned l = 0; l < 32; ++l) lanes[l] = g.pool[first + l]->op;
  const WarpOp& op = *lanes[0];
  for (unsigned l = 1; l < 32; ++l) {
    if (!same_collective(op, *lanes[l]))
      fail_in_block("the lanes of warp " + std::to_string(first / 32) +
                    " wait in different warp collectives (each must be reached by all 32 lanes "
                    "together):" +
                    describe_threads(first, 32));
  }
  g.releasing_warp = static_cast<int>(first / 32);
  for (unsigned l = 1; l < 32; ++l) {
    const WarpOp& other = *lanes[l];
    if (other.width != op.width)
      fail_in_block(std::string(op.name) + ": lanes 0 and " + std::to_string(l) + " of warp " +
                    std::to_string(first / 32) + " pass different widths (" +
                    std::to_string(op.width) + ", " + std::to_string(other.width) + ")");
    if (other.ptr != op.ptr || other.ldm != op.ldm || other.layout != op.layout) {
      std::ostringstream m;
      m << op.name << ": lanes 0 and " << l << " of warp " << first / 32
        << " pass different arguments (ptr " << op.ptr << ", ldm " << op.ldm << ", layout "
        << op.layout << " versus ptr " << other.ptr << ", ldm " << other.ldm << ", layout "
        << other.layout << "); all lanes of the warp must pass the same";
      fail_in_block(m.str());
    }
  }
  switch (op.kind) {
    case OpKind::shfl_idx:
    case OpKind::shfl_up:
    case OpKind::shfl_down:
    case OpKind::shfl_xor:
      perform_shuffle(lanes);
      break;
    case OpKind::ballot:
    case OpKind::any:
    case OpKind::all:
      perform_vote(lanes);
      break;
    default:
      break;
  }
  if (op.hook != nullptr) op.hook(lanes);
  g.releasing_warp = -1;
  for (unsigned l = 0; l < 32; ++l) {
    Fiber* f = g.pool[first + l].get();
    f->state = State::ready;
    f->runnable = true;
  }
  ++g.stats.warp_collectives;
}

void release_block(unsigned n) {
  OpKind kind = OpKind::syncthreads;
  bool found = false;
  int count = 0, all = 1, any = 0;
  for (unsigned t = 0; t < n; ++t) {
    const Fiber* f = g.pool[t].get();
    if (f->state != State::at_block) continue;
    if (found && f->block_kind != kind)
      fail_in_block("threads wait at different block barriers:" + describe_threads(0, n));
    kind = f->block_kind;
    found = true;
    count += f->predicate;
    all &= f->predicate;
    any |= f->predicate;
  }
  const int result = kind == OpKind::syncthreads_count ? count
                     : kind == OpKind::syncthreads_and ? all
                     : kind == OpKind::syncthreads_or  ? any
                                                       : 0;
  for (unsigned t = 0; t < n; ++t) {
    Fiber* f = g.pool[t].get();
    if (f->state != State::at_block) continue;
    f->block_result = result;
    f->state = State::ready;
    f->runnable = true;
  }
  ++g.stats.block_barriers;
}

// Every fiber of the block waits or has exited: releases what can be
// released. Returns false when every thread has exited; throws when nothing
// can proceed.
bool release_barriers(unsigned n) {
  bool progress = false;
  unsigned alive = 0, at_block = 0;
  for (unsigned first = 0; first < n; first += 32) {
    const unsigned lanes = std::min(32u, n - first);
    unsigned at_warp = 0, exited = 0;
    for (unsigned t = first; t < first + lanes; ++t) {
      switch (g.pool[t]->state) {
        case State::at_warp:
          ++at_warp;
          break;
        case State::exited:
          ++exited;
          break;
        case State::at_block:
          ++at_block;
          break;
        case State::ready:
          fail_in_block("internal error: a runnable thread was not run");
      }
    }
    alive += lanes - exited;
    if (at_warp == 32) {
      release_warp(first);
      progress = true;
    } else if (at_warp > 0 && (exited > 0 || lanes < 32)) {
      fail_in_block(
          lanes < 32
              ? "warp " + std::to_string(first / 32) + " has only " + std::to_string(lanes) +
                    " threads (the block size is not a multiple of 32), so it cannot complete "
                    "a warp collective:" +
                    describe_threads(first, lanes)
              : "a warp collective of warp " + std::to_string(first / 32) +
                    " waits for lanes that have exited:" + describe_threads(first, lanes));
    }
  }
  if (alive == 0) return false;
  if (at_block == alive) {
    release_block(n);
    progress = true;
  }
  if (!progress)
    fail_in_block(
        "deadlock: no barrier can be released (a __syncthreads needs every live "
        "thread of the block, a warp collective all 32 lanes of its warp):" +
        describe_threads(0, n));
  return true;
}

// Unwinds every fiber of the block that is suspended mid-kernel, by resuming it
// with Cancelled thrown from its synchronization point.
void cancel(unsigned n) {
  g.cancelling = true;
  for (unsigned t = 0; t < n; ++t) {
    Fiber* f = g.pool[t].get();
    if (!f->started) {
      f->state = State::exited;
      continue;
    }
    // A kernel that swallows Cancelled and keeps synchronizing is abandoned
    // after a few attempts; its stack is only ever reused from scratch.
    for (int attempt = 0; f->state != State::exited && attempt < 16; ++attempt) resume(f);
    if (f->state != State::exited) {
      f->state = State::exited;
      f->stack_dirty = true;
    }
  }
  g.cancelling = false;
}

uint64_t next_random(uint64_t& state) {
  // splitmix64
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Warps in priority order (the schedule order decides which warp comes
// first, and the lanes' order within it): the first warp that can move runs
// until all its lanes wait, its collectives are released at once, so it gets
// as far as the next __syncthreads before any other warp starts. A read of
// shared data another warp writes, without the __syncthreads between them,
// then sees it too early or too late.
void run_warps_ahead(const LaunchOptions& options, uint64_t& rng, unsigned n,
                     const std::vector<unsigned>& order) {
  const unsigned warps = (n + 31) / 32;
  std::vector<unsigned> warp_order(warps);
  for (unsigned w = 0; w < warps; ++w)
    warp_order[w] = options.order == Order::reverse ? warps - 1 - w : w;
  for (;;) {
    ++g.stats.rounds;
    if (options.order == Order::shuffle)
      for (unsigned i = warps - 1; i > 0; --i)
        std::swap(warp_order[i], warp_order[next_random(rng) % (i + 1)]);
    bool moved = false;
    for (unsigned w : warp_order) {
      const unsigned first = w * 32, lanes = std::min(32u, n - first);
      bool ran = false;
      for (unsigned t : order) {
        if (t < first || t >= first + lanes) continue;
        Fiber* f = g.pool[t].get();
        if (!f->runnable) continue;
        f->runnable = false;
        resume(f);
        ran = true;
        if (f->error) std::rethrow_exception(f->error);
      }
      unsigned at_warp = 0;
      for (unsigned t = first; t < first + lanes; ++t)
        at_warp += g.pool[t]->state == State::at_warp;
      if (lanes == 32 && at_warp == 32) {
        release_warp(first);
        ran = true;
      }
      if (ran) {
        moved = true;
        break;  // back to the first warp in priority order
      }
    }
    if (!moved && !release_barriers(n)) return;
  }
}

void run_block(const LaunchOptions& options, uint64_t& rng, unsigned n,
               std::vector<unsigned>& order) {
  const dim3 dim = builtins.block_dim;
  for (unsigned t = 0; t < n; ++t) {
    Fiber* f = g.pool[t].get();
    f->tid = t;
    f->idx = uint3{t % dim.x, (t / dim.x) % dim.y, t / (dim.x * dim.y)};
    f->state = State::ready;
    f->runnable = true;
    f->started = false;
    f->op = nullptr;
    f->error = nullptr;
    f->fake_stack = nullptr;
    if (f->stack_dirty) {
#if defined(FG_EMU_ASAN)
      ASAN_UNPOISON_MEMORY_REGION(f->stack_lo, f->stack_bytes);
#endif
      f->stack_dirty = false;
    }
    prepare(f);
  }
  if (g.shared != nullptr) std::memset(g.shared, 0xFF, g.shared_bytes);
  ++g.stats.blocks;

  std::exception_ptr failure;
  try {
    if (options.warps_run_ahead) {
      run_warps_ahead(options, rng, n, order);
      return;
    }
    for (;;) {
      ++g.stats.rounds;
      if (options.order == Order::shuffle) {
        for (unsigned i = n - 1; i > 0; --i) std::swap(order[i], order[next_random(rng) % (i + 1)]);
      }
      for (unsigned t : order) {
        Fiber* f = g.pool[t].get();
        if (!f->runnable) continue;
        f->runnable = false;
        resume(f);
        if (f->error) {
          failure = f->error;
          break;
        }
      }
      if (failure || !release_barriers(n)) break;
    }
  } catch (...) {
    failure = std::current_exception();
  }
  g.releasing_warp = -1;
  // Outside the handler: unwinding the fibers throws and catches in them.
  if (failure) {
    cancel(n);
    std::rethrow_exception(failure);
  }
}

struct AlignedFree {
  void operator()(unsigned char* p) const { ::operator delete (p, std::align_val_t{128}); }
};

}  // namespace

// ---------------------------------------------------------------- fiber side

bool in_kernel() { return t_in_launch && g.current != nullptr; }

unsigned lane_id() { return g.current->tid % 32; }

void fail(const std::string& message) {
  if (in_kernel())
    throw Error("fg_emu: " + block_name() + ", " + thread_name(g.current) + ": " + message);
  if (t_in_launch && g.releasing_warp >= 0)
    throw Error("fg_emu: " + block_name() + ", warp " + std::to_string(g.releasing_warp) + ": " +
                message);
  throw Error("fg_emu: " + message);
}

void fail_unstable_load() {
  fail(
      "wmma::load_matrix_sync: the tile changed while the warp was loading it (a write by "
      "another thread that no __syncwarp or __syncthreads orders before or after the load)");
}

void fail_outside_kernel(const char* what) {
  throw Error(std::string("fg_emu: ") + what +
              " called outside a kernel launched by fg_emu::launch");
}

void check_full_mask(const char* name, unsigned mask) {
  if (mask != 0xffffffffu) {
    char hex[16];
    std::snprintf(hex, sizeof(hex), "0x%08x", mask);
    fail(std::string(name) + ": mask " + hex +
         " is not the full warp; the emulation supports only full-warp collectives");
  }
}

void warp_collective(WarpOp& op) {
  if (!in_kernel()) fail_outside_kernel(op.name);
  Fiber* f = g.current;
  if (g.cancelling) {
    // Reached from a destructor while being unwound: no barrier any more.
    if (std::uncaught_exceptions() > 0) return;
    throw Cancelled{};
  }
  f->op = &op;
  f->state = State::at_warp;
  suspend(f);
}

int block_barrier(OpKind kind, int predicate) {
  if (!in_kernel()) fail_outside_kernel("__syncthreads");
  Fiber* f = g.current;
  if (g.cancelling) {
    if (std::uncaught_exceptions() > 0) return 0;
    throw Cancelled{};
  }
  f->block_kind = kind;
  f->predicate = predicate != 0 ? 1 : 0;
  f->state = State::at_block;
  suspend(f);
  return f->block_result;
}

void check_wmma_memory(const char* name, const void* ptr, unsigned ldm, size_t element_bytes) {
  if (reinterpret_cast<uintptr_t>(ptr) % 32 != 0) {
    std::ostringstream m;
    m << name << ": pointer " << ptr
      << " is not 32-byte aligned (the WMMA API requires a 256-bit aligned pointer)";
    fail(m.str());
  }
  if ((static_cast<size_t>(ldm) * element_bytes) % 16 != 0)
    fail(std::string(name) + ": ldm " + std::to_string(ldm) + " is not a multiple of " +
         std::to_string(16 / element_bytes) + " elements (16 bytes), as the WMMA API requires");
}

void check_uniform_fragment(WarpOp* const* lanes, const void* WarpOp::*field, const char* what,
                            size_t bytes, size_t element_bytes) {
  const auto* first = static_cast<const unsigned char*>(lanes[0]->*field);
  for (int l = 1; l < 32; ++l) {
    const auto* other = static_cast<const unsigned char*>(lanes[l]->*field);
    if (std::memcmp(first, other, bytes) == 0) continue;
    size_t byte = 0;
    while (first[byte] == other[byte]) ++byte;
    fail(std::string(lanes[0]->name) + ": " + what + " differs between lane 0 and lane " +
         std::to_string(l) + " (first at element " + std::to_string(byte / element_bytes) +
         "). In the emulation every lane holds the whole tile, so kernel code may only change "
         "fragment elements uniformly; lanes that loaded different data also read memory that "
         "was being written");
  }
}

}  // namespace detail

// ---------------------------------------------------------------- public

void* dynamic_shared() {
  if (!detail::in_kernel()) detail::fail_outside_kernel("fg_emu::dynamic_shared()");
  return detail::g.shared;
}

size_t dynamic_shared_bytes() {
  if (!detail::in_kernel()) detail::fail_outside_kernel("fg_emu::dynamic_shared_bytes()");
  return detail::g.shared_bytes;
}

LaunchStats last_launch_stats() {
  std::lock_guard<std::mutex> lock(detail::launch_mutex);
  return detail::g.stats;
}

namespace detail {

void run_grid(const LaunchOptions& options, dim3 grid, dim3 block, size_t shared_bytes,
              Invoke invoke, const void* body) {
  if (t_in_launch)
    throw Error("fg_emu: launch from kernel code (dynamic parallelism) is not emulated");
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (block.x == 0 || block.y == 0 || block.z == 0 || block.x > 1024 || block.y > 1024 ||
      block.z > 64 || threads > kMaxBlockThreads)
    throw Error("fg_emu: invalid block " + format_uint3(block.x, block.y, block.z) +
                " (each dimension at least 1, x and y at most 1024, z at most 64, at most 1024 "
                "threads)");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
      grid.z > 65535)
    throw Error("fg_emu: invalid grid " + format_uint3(grid.x, grid.y, grid.z));
  if (shared_bytes > kMaxSharedBytes)
    throw Error("fg_emu: " + std::to_string(shared_bytes) +
                " bytes of dynamic shared memory exceed what any GPU gives a block (" +
                std::to_string(kMaxSharedBytes) + ")");

  std::lock_guard<std::mutex> lock(launch_mutex);
  const unsigned n = static_cast<unsigned>(threads);
  while (g.pool.size() < n) {
    auto f = std::make_unique<Fiber>();
    allocate_stack(f.get(), g.pool.size());
    g.pool.push_back(std::move(f));
  }
  std::unique_ptr<unsigned char, AlignedFree> shared;
  if (shared_bytes > 0)
    shared.reset(static_cast<unsigned char*>(::operator new (shared_bytes, std::align_val_t{128})));

  g.stats = LaunchStats{};
  g.invoke = invoke;
  g.body = body;
  g.shared = shared.get();
  g.shared_bytes = shared_bytes;
  builtins.block_dim = block;
  builtins.grid_dim = grid;
  t_in_launch = true;
  struct Reset {
    ~Reset() {
      t_in_launch = false;
      g.invoke = nullptr;
      g.body = nullptr;
      g.shared = nullptr;
      g.shared_bytes = 0;
    }
  } reset;

  std::vector<unsigned> order(n);
  for (unsigned t = 0; t < n; ++t) order[t] = options.order == Order::reverse ? n - 1 - t : t;
  uint64_t rng = options.seed;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        builtins.block_idx = uint3{x, y, z};
        run_block(options, rng, n, order);
      }
}

}  // namespace detail
}  // namespace fg_emu

// The first function every fiber runs: the kernel, with whatever it throws
// kept for launch() to rethrow, then back to the scheduler for good.
extern "C" void fg_emu_fiber_entry(void* fiber) {
  using namespace fg_emu::detail;
  Fiber* f = static_cast<Fiber*>(fiber);
  asan_finish(nullptr, &g.main_stack_bottom, &g.main_stack_bytes);
  try {
    g.invoke(g.body);
  } catch (const Cancelled&) {
  } catch (...) {
    f->error = std::current_exception();
  }
  f->state = State::exited;
  // A null save slot tells the sanitizer this fiber's stack is finished.
  asan_start(nullptr, g.main_stack_bottom, g.main_stack_bytes);
#if defined(FG_EMU_X86_64_SWITCH)
  fg_emu_switch(&f->sp, g.main_sp);
#else
  setcontext(&g.main_context);
#endif
  std::abort();  // an exited fiber is never resumed
}
