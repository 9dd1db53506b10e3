// Verilator harness of DeviceTop: protocol bytes on stdin go to the device's rx stream,
// bytes from its tx stream go to stdout (both binary). Built and cached by
// sw/runtime/device.py (build_harness); top-level ports are plain: clk, rst, rx_valid, rx_ready,
// rx_payload, tx_valid, tx_ready, tx_payload, active (a received frame is being executed).
//
// Time: the clock runs while there is work: input queued, a frame being executed
// (`active`), or fewer than `kQuiet` cycles since the last byte moved. Otherwise (the
// device waits for the host, though the engine may still be computing) the harness waits up to
// `kWaitMs` of wall time for the host's next request without simulating, so the host's
// own think time does not turn into simulated cycles (or burn a core); only if the host
// stays silent that long does the clock run on, up to `idle_limit` quiet cycles, and
// then the harness blocks on stdin. `idle_limit` (argv[1]) must exceed the device's frame
// timeout so that a truncated frame still times out and gets its error reply. At exit
// (EOF on stdin, once idle) it prints "harness: <cycles> cycles" on stderr.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <poll.h>
#include <unistd.h>
#include <vector>

#include "Vtop.h"
#include "verilated.h"

static bool write_all(std::vector<uint8_t>& out) {
    size_t done = 0;
    while (done < out.size()) {
        ssize_t n = write(1, out.data() + done, out.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        done += size_t(n);
    }
    out.clear();
    return true;
}

static const long kQuiet = 256;      // quiet cycles before waiting for the host
static const int kWaitMs = 20;       // wall time the host may take before the clock runs on

int main(int argc, char** argv) {
    long idle_limit = argc > 1 ? std::atol(argv[1]) : 100000;
    if (idle_limit < 1) {
        std::fprintf(stderr, "harness: idle limit must be a positive cycle count\n");
        return 2;
    }
    auto ctx = new VerilatedContext;
    auto top = new Vtop{ctx};
    std::deque<uint8_t> in;
    std::vector<uint8_t> out;
    uint64_t cycles = 0;
    long idle = 0;
    bool eof = false;
    bool waited = false;                 // already waited kWaitMs in this quiet spell
    uint8_t buf[65536];

    auto tick = [&]() {
        top->clk = 0;
        top->eval();
        top->clk = 1;
        top->eval();
    };
    top->rst = 1;
    top->rx_valid = 0;
    top->tx_ready = 1;
    tick();
    tick();
    top->rst = 0;

    for (;;) {
        bool wait = in.empty() && !eof && idle >= kQuiet && !waited && !top->active;
        if (in.empty() && !eof && (idle >= idle_limit || wait || (cycles & 63) == 0)) {
            bool block = idle >= idle_limit;
            if ((block || wait) && !write_all(out)) return 1;
            struct pollfd p = {0, POLLIN, 0};
            int r = poll(&p, 1, block ? -1 : wait ? kWaitMs : 0);
            if (r < 0 && errno != EINTR) return 1;
            if (wait && r == 0) waited = true;
            if (r > 0) {
                ssize_t n = read(0, buf, sizeof buf);
                if (n < 0 && errno != EINTR && errno != EAGAIN) return 1;
                if (n == 0) eof = true;
                for (ssize_t k = 0; k < n; k++) in.push_back(buf[k]);
            }
        }
        if (eof && in.empty() && idle >= idle_limit) break;

        top->rx_valid = in.empty() ? 0 : 1;
        top->rx_payload = in.empty() ? 0 : in.front();
        top->tx_ready = 1;
        top->clk = 0;
        top->eval();
        bool rx_take = top->rx_valid && top->rx_ready;
        bool tx_take = top->tx_valid && top->tx_ready;
        uint8_t tx_byte = top->tx_payload;
        top->clk = 1;
        top->eval();
        cycles++;
        if (rx_take) in.pop_front();
        if (tx_take) out.push_back(tx_byte);
        idle = (rx_take || tx_take) ? 0 : idle + 1;
        if (idle == 0) waited = false;
        if (!out.empty() && (idle == 16 || out.size() >= sizeof buf))
            if (!write_all(out)) return 1;
    }
    write_all(out);
    std::fprintf(stderr, "harness: %llu cycles\n", (unsigned long long)cycles);
    top->final();
    delete top;
    delete ctx;
    return 0;
}
