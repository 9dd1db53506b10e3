// Verilator harness of the device top: protocol bytes on stdin go to the device's rx stream,
// bytes from its tx stream go to stdout (both binary). Built and cached by
// hw/simulator.py (run from sw/runtime/link.py); top-level ports are plain: clk, rst,
// rx_valid, rx_ready, rx_payload, tx_valid, tx_ready, tx_payload, active (a received frame
// is being executed, or a program runs).
//
// With HARNESS_MEMORY (the memory device top) the harness is also the device memory behind
// the top's LiteDRAM-style native port (mem_cmd_*, mem_wdata_*, mem_rdata_*; data words of
// MEM_WORD_BYTES bytes), with a timing model of LiteDRAM on the Arty's DDR3 (docs/memory.md):
// one command per cycle at most, reads answered in order after `latency` cycles, a refresh
// stall every `refresh_interval` cycles, a row-miss penalty when a bank's open row changes,
// a turnaround penalty between reads and writes. Options:
//   --load ADDR:FILE          preload the memory (before reset)
//   --dump ADDR:LEN:FILE      write the memory out at exit
//   --mem-latency N --mem-refresh INTERVAL:CYCLES --mem-row-miss N --mem-turnaround N
//   --max-cycles N            stop after N cycles (benchmarks: bench/sim_speed.py)
// At exit the harness prints "harness-mem: ..." statistics on stderr.
//
// With HARNESS_ETH (the Ethernet top, hw/eth/simulator.py) the device also answers UDP
// datagrams over its MII pins: eth_wire.h plays the cable and the host's network stack, a
// local UDP socket (printed on stdout as "harness-eth: udp 127.0.0.1:PORT", before any
// other byte) on the other side; stdin / stdout stay the device's other link (the UART's
// bytes on the board). Options:
//   --udp-port N (0: any free port) --device-ip A.B.C.D --device-port N --host-ip A.B.C.D
//
// Time: the clock runs while there is work: input queued, the device active, or fewer than
// `kQuiet` cycles since the last byte moved. Otherwise (the device waits for the host) the
// harness waits up to `kWaitMs` of wall time for the host's next request without simulating,
// so the host's own think time does not turn into simulated cycles (or burn a core); only if
// the host stays silent that long does the clock run on, up to `idle_limit` quiet cycles,
// and then the harness blocks on stdin. `idle_limit` (argv[1]) must exceed the device's
// frame timeout so that a truncated frame still times out and gets its error reply. At exit
// (EOF on stdin, once idle) it prints "harness: <cycles> cycles" on stderr.
//
// Evaluation: the top (hw/simulator.py) registers every input, rst included, at the rising
// edge before the device sees it. Each loop iteration sets the inputs of cycle c, then runs
// the edge that ends cycle c-1 (clk low, clk high), and reads the outputs of cycle c: the
// same cycle behaviour as setting inputs and reading outputs before each edge, with the
// model's combinational logic evaluated once a cycle instead of after every input change.
// Decisions taken before the inputs are set (waiting for the host, exit) see `active` of
// cycle c-1, one cycle late.
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <poll.h>
#include <string>
#include <unistd.h>
#include <vector>

#include "Vtop.h"
#include "verilated.h"
#ifdef HARNESS_ETH
#include "eth_wire.h"
#endif

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
// While the clock runs with no input queued, stdin is polled every 64 cycles, or every
// 1024 once no byte has moved for `kLinkQuiet` cycles (a program running between the host's
// STATUS polls): a poll() costs about 27 us on these VMs, as much as ten simulated cycles
// (before, a program that ran on past `idle_limit` quiet cycles was polled every cycle: a
// third of the whole-frame simulation's time).
static const long kLinkQuiet = 4096;
static const int kWaitMs = 20;       // wall time the host may take before the clock runs on

#ifdef HARNESS_MEMORY
static const int kWordBytes = MEM_WORD_BYTES;
static const int kWords32 = kWordBytes / 4;

// The device memory and its timing model.
struct Memory {
    uint8_t* bytes = nullptr;
    uint64_t size = 0;
    int latency = 24, refresh_interval = 780, refresh_cycles = 20, row_miss = 6;
    int turnaround = 4;
    struct Cmd { bool we; uint32_t addr; };
    struct Word { uint32_t w[kWords32]; uint32_t en; };
    std::deque<Cmd> cmds;                 // accepted, not yet executed (in order)
    std::deque<Word> wdata;               // write data not yet used
    std::deque<std::pair<uint64_t, Word>> reads;   // (cycle the data is due, data)
    uint64_t busy_until = 0;              // no command executes before this cycle
    uint64_t last_due = 0;
    bool last_we = false;
    int64_t open_row[8];
    uint64_t n_reads = 0, n_writes = 0, n_row_miss = 0, n_refresh = 0, n_turn = 0;
    uint64_t cmd_stall = 0;               // cycles a command waited at the port

    bool init(uint64_t n) {
        size = n;
        bytes = static_cast<uint8_t*>(std::calloc(n, 1));
        for (auto& r : open_row) r = -1;
        return bytes != nullptr;
    }
    bool cmd_ready(uint64_t cycle) const { return cycles_ok(cycle) && cmds.size() < 8; }
    bool cycles_ok(uint64_t cycle) const { return cycle >= busy_until; }

    // One cycle of the controller: refresh, then at most one command executed.
    bool step(uint64_t cycle) {
        if (refresh_interval > 0 && cycle % uint64_t(refresh_interval) == 0) {
            busy_until = std::max(busy_until, cycle + uint64_t(refresh_cycles));
            for (auto& r : open_row) r = -1;       // refresh closes every row
            n_refresh++;
        }
        if (cycle < busy_until || cmds.empty()) return true;
        const Cmd c = cmds.front();
        if (c.we && wdata.empty()) return true;    // a write waits for its data
        uint64_t byte = uint64_t(c.addr) * kWordBytes;
        if (byte + kWordBytes > size) {
            std::fprintf(stderr, "harness: memory access past the end: word %#x\n", c.addr);
            return false;
        }
        // DDR3 x16 page: 2 KiB = 128 words of 16 bytes; LiteDRAM maps row, bank, column.
        uint32_t col_words = 2048 / kWordBytes;
        int bank = int((c.addr / col_words) & 7);
        int64_t row = int64_t(c.addr / col_words / 8);
        uint64_t penalty = 0;
        if (open_row[bank] != row) {
            if (open_row[bank] >= 0) { penalty += uint64_t(row_miss); n_row_miss++; }
            open_row[bank] = row;
        }
        if (c.we != last_we) { penalty += uint64_t(turnaround); n_turn++; }
        last_we = c.we;
        if (penalty) { busy_until = cycle + penalty; return true; }
        cmds.pop_front();
        if (c.we) {
            const Word& w = wdata.front();
            for (int k = 0; k < kWordBytes; k++)
                if (w.en >> k & 1) bytes[byte + k] = uint8_t(w.w[k / 4] >> (8 * (k % 4)));
            wdata.pop_front();
            n_writes++;
        } else {
            Word w{};
            for (int k = 0; k < kWordBytes; k++)
                w.w[k / 4] |= uint32_t(bytes[byte + k]) << (8 * (k % 4));
            uint64_t due = std::max(cycle + uint64_t(latency), last_due + 1);
            last_due = due;
            reads.emplace_back(due, w);
            n_reads++;
        }
        return true;
    }
};

static bool parse_range(const char* arg, uint64_t& a, uint64_t& b, std::string& file, bool len) {
    char* end = nullptr;
    a = std::strtoull(arg, &end, 0);
    if (*end != ':') return false;
    if (len) {
        b = std::strtoull(end + 1, &end, 0);
        if (*end != ':') return false;
    }
    file = end + 1;
    return !file.empty();
}
#endif

int main(int argc, char** argv) {
    long idle_limit = argc > 1 ? std::atol(argv[1]) : 100000;
    if (idle_limit < 1) {
        std::fprintf(stderr, "harness: idle limit must be a positive cycle count\n");
        return 2;
    }
#ifdef HARNESS_MEMORY
    Memory mem;
    if (!mem.init(MEM_BYTES)) {
        std::fprintf(stderr, "harness: cannot allocate %llu bytes of memory\n",
                     (unsigned long long)MEM_BYTES);
        return 2;
    }
    struct Dump { uint64_t addr, len; std::string file; };
    std::vector<Dump> dumps;
    uint64_t max_cycles = 0;             // 0: no limit
    for (int k = 2; k < argc; k++) {
        std::string opt = argv[k];
        const char* val = k + 1 < argc ? argv[k + 1] : nullptr;
        uint64_t a = 0, b = 0;
        std::string file;
        if (!val) { std::fprintf(stderr, "harness: %s needs a value\n", opt.c_str()); return 2; }
        k++;
        if (opt == "--load" && parse_range(val, a, b, file, false)) {
            FILE* f = std::fopen(file.c_str(), "rb");
            if (!f) { std::fprintf(stderr, "harness: cannot read %s\n", file.c_str()); return 2; }
            std::fseek(f, 0, SEEK_END);
            long n = std::ftell(f);
            std::fseek(f, 0, SEEK_SET);
            if (n < 0 || a + uint64_t(n) > mem.size ||
                std::fread(mem.bytes + a, 1, size_t(n), f) != size_t(n)) {
                std::fprintf(stderr, "harness: %s does not fit the memory at %#llx\n",
                             file.c_str(), (unsigned long long)a);
                return 2;
            }
            std::fclose(f);
        } else if (opt == "--dump" && parse_range(val, a, b, file, true) && a + b <= mem.size) {
            dumps.push_back({a, b, file});
        } else if (opt == "--max-cycles") {
            max_cycles = std::strtoull(val, nullptr, 0);
        } else if (opt == "--mem-latency") {
            mem.latency = std::atoi(val);
        } else if (opt == "--mem-row-miss") {
            mem.row_miss = std::atoi(val);
        } else if (opt == "--mem-turnaround") {
            mem.turnaround = std::atoi(val);
        } else if (opt == "--mem-refresh" &&
                   std::sscanf(val, "%d:%d", &mem.refresh_interval, &mem.refresh_cycles) == 2) {
#ifdef HARNESS_ETH
        } else if (opt == "--udp-port" || opt == "--device-ip" || opt == "--device-port" ||
                   opt == "--host-ip") {           // the Ethernet side's (below)
#endif
        } else {
            std::fprintf(stderr, "harness: bad option %s %s\n", opt.c_str(), val);
            return 2;
        }
    }
#endif
#ifdef HARNESS_ETH
    EthWire eth;
    long udp_port = 0;
    for (int k = 2; k < argc; k += 2) {
        std::string opt = argv[k];
        if (k + 1 >= argc) { std::fprintf(stderr, "harness: %s needs a value\n", opt.c_str()); return 2; }
        const char* val = argv[k + 1];
        in_addr a{};
        if (opt == "--udp-port") udp_port = std::atol(val);
        else if (opt == "--device-port") eth.dev_port = uint16_t(std::atol(val));
        else if (opt == "--device-ip" && inet_pton(AF_INET, val, &a) == 1) eth.dev_ip = ntohl(a.s_addr);
        else if (opt == "--host-ip" && inet_pton(AF_INET, val, &a) == 1) eth.host_ip = ntohl(a.s_addr);
#ifdef HARNESS_MEMORY
        else if (opt == "--load" || opt == "--dump" || opt.rfind("--mem-", 0) == 0) {}
#endif
        else { std::fprintf(stderr, "harness: bad option %s %s\n", opt.c_str(), val); return 2; }
    }
    if (udp_port < 0 || udp_port > 65535 || !eth.open(uint16_t(udp_port))) {
        std::fprintf(stderr, "harness: cannot bind UDP 127.0.0.1:%ld\n", udp_port);
        return 2;
    }
    static const uint64_t kArpRetry = 200000;   // cycles between ARP requests for the device
#endif
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
#ifdef HARNESS_ETH
    top->mii_rx_clk = top->mii_tx_clk = 0;
    top->mii_rx_dv = 0;
    top->mii_rx_data = 0;
#endif
    top->rx_valid = 0;
    top->tx_ready = 1;
#ifdef HARNESS_MEMORY
    top->mem_cmd_ready = 0;
    top->mem_wdata_ready = 0;
    top->mem_rdata_valid = 0;
#endif
    tick();                              // the port registers take rst = 1
    tick();                              // the device is reset
    top->rst = 0;                        // (reset once more by the loop's first edge)

    for (;;) {
        bool input = !in.empty();
#ifdef HARNESS_ETH
        input = input || eth.busy();
#endif
        bool wait = !input && !eof && idle >= kQuiet && !waited && !top->active;
        bool block = idle >= idle_limit && !top->active;
        uint64_t every = idle < kLinkQuiet ? 63 : 1023;
        if (!input && !eof && (block || wait || (cycles & every) == 0)) {
            if ((block || wait) && !write_all(out)) return 1;
            struct pollfd p[2] = {{0, POLLIN, 0}, {-1, POLLIN, 0}};
#ifdef HARNESS_ETH
            p[1].fd = eth.sock;
#endif
            int r = poll(p, 2, block ? -1 : wait ? kWaitMs : 0);
            if (r < 0 && errno != EINTR) return 1;
            if (wait && r == 0) waited = true;
            if (r > 0 && (p[0].revents & (POLLIN | POLLHUP))) {
                ssize_t n = read(0, buf, sizeof buf);
                if (n < 0 && errno != EINTR && errno != EAGAIN) return 1;
                if (n == 0) eof = true;
                for (ssize_t k = 0; k < n; k++) in.push_back(buf[k]);
            }
#ifdef HARNESS_ETH
            if (r > 0 && (p[1].revents & POLLIN)) eth.receive(cycles);
#endif
        }
#ifdef HARNESS_ETH
        eth.service(cycles, kArpRetry);
        if (eof && in.empty() && !eth.busy() && idle >= idle_limit && !top->active) break;
        // MII clocks at a quarter of the sys clock: rising at cycles % 4 == 0 (the device's
        // tx pins sampled just before), falling at 2 (the next rx nibble set).
        bool mii_moved = false;
        if ((cycles & 3) == 0) {
            bool en = top->mii_tx_en;
            if (en || eth.rx_on) mii_moved = true;
            eth.sample_tx(en, top->mii_tx_data);
            top->mii_rx_clk = top->mii_tx_clk = 1;
        } else if ((cycles & 3) == 2) {
            uint8_t nibble = 0;
            bool dv = eth.next_rx(nibble);
            mii_moved = mii_moved || dv;
            top->mii_rx_dv = dv;
            top->mii_rx_data = nibble;
            top->mii_rx_clk = top->mii_tx_clk = 0;
        }
#else
        if (eof && in.empty() && idle >= idle_limit && !top->active) break;
#ifdef HARNESS_MEMORY
        if (max_cycles && cycles >= max_cycles) break;
#endif
#endif
        top->rx_valid = in.empty() ? 0 : 1;
        top->rx_payload = in.empty() ? 0 : in.front();
        top->tx_ready = 1;
#ifdef HARNESS_MEMORY
        if (!mem.step(cycles)) return 1;
        bool cmd_ready = mem.cmd_ready(cycles);
        bool w_ready = mem.wdata.size() < 8;
        bool r_show = !mem.reads.empty() && mem.reads.front().first <= cycles;
        top->mem_cmd_ready = cmd_ready;
        top->mem_wdata_ready = w_ready;
        top->mem_rdata_valid = r_show;
        if (r_show)
            for (int k = 0; k < kWords32; k++)
                top->mem_rdata_data[k] = mem.reads.front().second.w[k];
#endif
        // The edge that ends the previous cycle: the device's port registers (hw/simulator.py)
        // take the inputs just set, so the outputs read now are this cycle's, as if the
        // inputs had been set before a clk-low eval. `top->active` read before this edge is
        // the previous cycle's.
        tick();
        bool rx_take = top->rx_valid && top->rx_ready;
        bool tx_take = top->tx_valid && top->tx_ready;
        uint8_t tx_byte = top->tx_payload;
#ifdef HARNESS_ETH
        bool moved = rx_take || tx_take || mii_moved;
#else
        bool moved = rx_take || tx_take;
#endif
#ifdef HARNESS_MEMORY
        bool cmd_take = top->mem_cmd_valid && cmd_ready;
        Memory::Cmd cmd{bool(top->mem_cmd_we), uint32_t(top->mem_cmd_addr)};
        bool w_take = top->mem_wdata_valid && w_ready;
        Memory::Word word{};
        if (w_take) {
            for (int k = 0; k < kWords32; k++) word.w[k] = top->mem_wdata_data[k];
            word.en = uint32_t(top->mem_wdata_we);
        }
        if (top->mem_cmd_valid && !cmd_ready) mem.cmd_stall++;
        if (r_show && !top->mem_rdata_ready) {
            std::fprintf(stderr, "harness: read data not taken at once (the port does not "
                                 "wait)\n");
            return 1;
        }
#endif
        cycles++;
#ifdef HARNESS_MEMORY
        if (cmd_take) mem.cmds.push_back(cmd);
        if (w_take) mem.wdata.push_back(word);
        if (r_show) mem.reads.pop_front();
#endif
        if (rx_take) in.pop_front();
        if (tx_take) out.push_back(tx_byte);
        idle = moved ? 0 : idle + 1;
        if (idle == 0) waited = false;
        if (!out.empty() && (idle == 16 || out.size() >= sizeof buf))
            if (!write_all(out)) return 1;
    }
    write_all(out);
    std::fprintf(stderr, "harness: %llu cycles\n", (unsigned long long)cycles);
#ifdef HARNESS_ETH
    eth.report();
#endif
#ifdef HARNESS_MEMORY
    std::fprintf(stderr, "harness-mem: reads %llu writes %llu row_misses %llu refreshes %llu "
                 "turnarounds %llu cmd_stall_cycles %llu\n",
                 (unsigned long long)mem.n_reads, (unsigned long long)mem.n_writes,
                 (unsigned long long)mem.n_row_miss, (unsigned long long)mem.n_refresh,
                 (unsigned long long)mem.n_turn, (unsigned long long)mem.cmd_stall);
    for (const Dump& d : dumps) {
        FILE* f = std::fopen(d.file.c_str(), "wb");
        if (!f || std::fwrite(mem.bytes + d.addr, 1, size_t(d.len), f) != size_t(d.len)) {
            std::fprintf(stderr, "harness: cannot write %s\n", d.file.c_str());
            return 1;
        }
        std::fclose(f);
    }
#endif
    top->final();
    delete top;
    delete ctx;
    return 0;
}
