// Report: see report.h.
#include "train/report.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "checkpoint/json.h"
#include "checkpoint/retention.h"
#include "core/error.h"
#include "data/utf8.h"

namespace tessera::train {
namespace fs = std::filesystem;
namespace {

std::string duration(double seconds) {
  char buf[32];
  // An ETA of a run with train.max_steps near 2^63 does not fit an integer (nor matter).
  if (!(seconds < 1e15)) return std::isfinite(seconds) ? ">1e15s" : "?";
  const int64_t s = int64_t(seconds);
  std::snprintf(buf, sizeof buf, "%ldm%02lds", long(s / 60), long(s % 60));
  return buf;
}

// A process killed mid-line leaves a line without its newline; the next run's first line would be
// glued onto it. Cut it off (every complete line is kept).
void drop_partial_line(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in || !in.seekg(-1, std::ios::end)) return;  // missing or empty
  if (in.get() == '\n') return;                     // the usual case: one byte read
  in.seekg(0);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t keep = text.find_last_of('\n');
  in.close();
  fs::resize_file(file, keep == std::string::npos ? 0 : keep + 1);
}

}  // namespace

void check_metrics_file(const fs::path& file) {
  std::error_code ec;
  const fs::file_status st = fs::status(file, ec);  // through a symbolic link
  if (!fs::exists(st) || fs::is_regular_file(st)) return;
  TESSERA_FAIL(file.string(), " is not a regular file (",
               fs::is_directory(st) ? "a directory" : "a device, FIFO or socket",
               fs::is_symlink(fs::symlink_status(file, ec)) ? ", through a symbolic link" : "",
               "): a run appends its metrics there; move it aside");
}

std::string describe_run_and_metrics(const fs::path& run_dir) {
  std::string held = describe_run(run_dir.string());
  check_metrics_file(run_dir / "metrics.jsonl");
  std::ifstream in(run_dir / "metrics.jsonl", std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // A last line without its newline (a killed run's) counts too.
  const int64_t lines =
      std::count(text.begin(), text.end(), '\n') + (!text.empty() && text.back() != '\n' ? 1 : 0);
  if (lines > 0)
    held += (held.empty() ? "" : ", ") + std::string("metrics.jsonl with ") +
            std::to_string(lines) + (lines == 1 ? " line" : " lines");
  return held;
}

double eta_seconds(double elapsed, int64_t updates, int64_t done, int64_t max_steps) {
  if (updates <= 0 || done >= max_steps) return 0;
  return elapsed / double(updates) * double(max_steps - done);
}

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  out += json_escape(s);
  out += '"';
  return out;
}

std::string printable(const std::string& text) {
  std::string out;
  for (const char ch : data::replace_invalid_utf8(text)) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\x%02x", c);
      out += esc;
    } else {
      out += ch;
    }
  }
  return out;
}

Report::Report(std::ostream& log, const fs::path& metrics, bool metrics_on, bool active)
    : log_(log), metrics_path_(metrics), active_(active) {
  if (!active_ || !metrics_on) return;
  check_metrics_file(metrics);
  drop_partial_line(metrics);
  open_metrics();
}

Report::~Report() {
  if (metrics_fd_ >= 0) ::close(metrics_fd_);
}

void Report::open_metrics() {
  metrics_fd_ = ::open(metrics_path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  TESSERA_CHECK(metrics_fd_ >= 0, "cannot write ", metrics_path_.string(), ": ",
                std::strerror(errno));
}

std::ostream& Report::log() { return active_ ? log_ : null_; }

void Report::line(const std::string& text) {
  if (active_) log_ << text << std::endl;
}

void Report::emit(const std::string& json) {
  if (metrics_fd_ < 0) return;
  struct stat at_path {}, open_file {};
  bool known = ::fstat(metrics_fd_, &open_file) == 0;
  if (known && (::stat(metrics_path_.c_str(), &at_path) != 0 || at_path.st_ino != open_file.st_ino ||
                at_path.st_dev != open_file.st_dev)) {
    log_ << "warning: " << metrics_path_.string() << " was removed or replaced while this run "
         << "wrote it: its lines go on in a new file at that path\n";
    ::close(metrics_fd_);
    metrics_fd_ = -1;
    try {
      open_metrics();
    } catch (const Error& e) {
      log_ << "warning: " << e.what() << ": metrics.jsonl lines are dropped\n";
      return;
    }
    known = ::fstat(metrics_fd_, &open_file) == 0;
  }
  const std::string text = json + "\n";
  const off_t before = known ? open_file.st_size : -1;
  size_t done = 0;
  int error = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(metrics_fd_, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error = n < 0 ? errno : ENOSPC;
      break;
    }
    done += size_t(n);
  }
  if (done == text.size()) {
    if (missing_ > 0)
      log_ << "metrics: " << metrics_path_.string() << " is written again; the " << missing_
           << " line(s) before this one are missing\n";
    missing_ = 0;
    return;
  }
  // Never a torn line: what was written of this one is taken back (or, where even that fails, cut
  // when the file is next opened: drop_partial_line).
  const bool taken_back = before >= 0 && ::ftruncate(metrics_fd_, before) == 0;
  if (missing_++ == 0)
    log_ << "warning: cannot write " << metrics_path_.string() << " (" << std::strerror(error)
         << "): its lines are missing until it can be written again; training goes on"
         << (taken_back || done == 0 ? "" : " (a torn line is cut when the file is next opened)")
         << "\n";
}

void Report::step(const StepReport& r) {
  char mfu[32] = "", balance[64] = "";
  if (r.mfu >= 0) std::snprintf(mfu, sizeof mfu, " | mfu %.1f%%", 100 * r.mfu);
  if (r.balance >= 0) std::snprintf(balance, sizeof balance, " | balance %.3f", r.balance);
  if (r.reward_accuracy >= 0)
    std::snprintf(balance, sizeof balance, " | acc %.3f | margin %.3f", r.reward_accuracy,
                  r.reward_chosen - r.reward_rejected);
  char line[320];
  std::snprintf(line, sizeof line,
                "step %5ld/%ld | loss %.4f%s | lr %.2e | norm %.3f | %.0f tok/s%s | eta %s",
                long(r.step), long(r.max_steps), r.loss, balance, r.lr, r.grad_norm, r.tokens_per_s,
                mfu, duration(r.eta_seconds).c_str());
  this->line(line);
  std::string json = "{\"step\": " + std::to_string(r.step) + ", \"loss\": " + json_number(r.loss) +
                     ", \"lr\": " + json_number(r.lr) +
                     ", \"grad_norm\": " + json_number(r.grad_norm) +
                     ", \"tokens_per_s\": " + json_number(r.tokens_per_s);
  if (r.mfu >= 0) json += ", \"mfu\": " + json_number(r.mfu);
  if (r.balance >= 0) json += ", \"router_balance\": " + json_number(r.balance);
  if (r.reward_accuracy >= 0)
    json += ", \"reward_accuracy\": " + json_number(r.reward_accuracy) +
            ", \"reward_chosen\": " + json_number(r.reward_chosen) +
            ", \"reward_rejected\": " + json_number(r.reward_rejected);
  emit(json + ", \"tokens\": " + std::to_string(r.tokens) + "}");
}

void Report::sample(int64_t step, const std::string& text) {
  char head[64];
  std::snprintf(head, sizeof head, "step %5ld | sample:", long(step));
  this->line(head);
  this->line(printable(text));
  emit("{\"step\": " + std::to_string(step) +
       ", \"sample\": " + json_string(data::replace_invalid_utf8(text)) + "}");
}

void Report::shares(int64_t step, const std::string& what, const std::string& a_name, double a,
                    const std::string& b_name, double b, int64_t items) {
  char line[160];
  std::snprintf(line, sizeof line, "step %5ld | %s %s %.4f | %s %.4f (%ld items)", long(step),
                what.c_str(), a_name.c_str(), a, b_name.c_str(), b, long(items));
  this->line(line);
  emit("{\"step\": " + std::to_string(step) + ", \"" + what + "_" + a_name +
       "\": " + json_number(a) + ", \"" + what + "_" + b_name + "\": " + json_number(b) + ", \"" +
       what + "_items\": " + std::to_string(items) + "}");
}

void Report::choices(int64_t step, double acc, double acc_norm, int64_t items) {
  shares(step, "choices", "acc", acc, "acc_norm", acc_norm, items);
}

void Report::eval_ema(int64_t step, double val) {
  char line[128];
  std::snprintf(line, sizeof line, "step %5ld | ema val loss %.4f | ema val ppl %.2f", long(step),
                val, std::exp(val));
  this->line(line);
  emit("{\"step\": " + std::to_string(step) + ", \"val_loss_ema\": " + json_number(val) + "}");
}

void Report::answers(int64_t step, double exact, double formed, int64_t items) {
  shares(step, "answers", "exact", exact, "formed", formed, items);
}

void Report::eval(int64_t step, double val, int64_t tokens) {
  char line[128];
  std::snprintf(line, sizeof line, "step %5ld | val loss %.4f | val ppl %.2f", long(step), val,
                std::exp(val));
  this->line(line);
  emit("{\"step\": " + std::to_string(step) + ", \"val_loss\": " + json_number(val) +
       ", \"val_ppl\": " + json_number(std::exp(val)) + ", \"val_tokens\": " +
       std::to_string(tokens) + "}");
}

void Report::eval_pairs(int64_t step, double val, double accuracy, double margin, int64_t pairs) {
  char line[160];
  std::snprintf(line, sizeof line,
                "step %5ld | val loss %.4f | reward accuracy %.4f | margin %.4f (%ld pairs)",
                long(step), val, accuracy, margin, long(pairs));
  this->line(line);
  emit("{\"step\": " + std::to_string(step) + ", \"val_loss\": " + json_number(val) +
       ", \"val_reward_accuracy\": " + json_number(accuracy) + ", \"val_reward_margin\": " +
       json_number(margin) + ", \"val_pairs\": " + std::to_string(pairs) + "}");
}

}  // namespace tessera::train
