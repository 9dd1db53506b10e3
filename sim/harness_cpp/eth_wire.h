// The host's side of the Ethernet cable for the Verilator harness (main.cpp, HARNESS_ETH):
// a local UDP socket (127.0.0.1 only) on one side, the device's MII pins on the other. It
// plays the wire and the host's network stack, nothing of the device: datagrams from the
// socket become Ethernet II / IPv4 / UDP frames (preamble, SFD, FCS, a 12-byte inter-frame
// gap) sent to the device's MAC address, learned by ARP first; the device's frames are
// checked (SFD, FCS, IPv4 header checksum), its ARP requests for the host's address
// answered, and its UDP payloads sent to whoever sent the last datagram. MII: one nibble
// per MII clock, low nibble first; the MII clocks run at a quarter of the sys clock
// (25 MHz at 100 MHz), as the DP83848 at 100 Mbit/s.
#pragma once

#include <arpa/inet.h>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

struct EthWire {
    int sock = -1;
    sockaddr_in peer{};
    bool have_peer = false;
    uint8_t host_mac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
    uint8_t dev_mac[6] = {0};
    bool dev_mac_known = false;
    uint32_t host_ip = 0xC0A80164;          // 192.168.1.100
    uint32_t dev_ip = 0xC0A80132;           // 192.168.1.50
    uint16_t dev_port = 7777;
    uint16_t host_port = 7778;              // source port before any datagram (then the sender's)
    // to the device
    std::deque<std::vector<uint8_t>> frames; // wire bytes (preamble .. FCS)
    size_t nib = 0;                          // nibbles of frames.front() sent
    int gap = 0;                             // nibble times of inter-frame gap left
    std::deque<std::vector<uint8_t>> pending;  // datagrams waiting for the device's MAC
    uint64_t arp_sent_at = 0;
    bool arp_outstanding = false;
    // from the device
    std::vector<uint8_t> rx_nibbles;
    bool rx_on = false;
    // counts
    uint64_t n_in = 0, n_out = 0, n_bad = 0, n_arp_req = 0, n_arp_rep = 0, n_other = 0;
    uint64_t bytes_in = 0, bytes_out = 0;   // UDP payload bytes to / from the device

    static uint32_t crc32(const uint8_t* p, size_t n) {
        uint32_t c = 0xFFFFFFFFu;
        for (size_t i = 0; i < n; i++) {
            c ^= p[i];
            for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
        }
        return ~c;
    }
    static uint16_t ip_sum(const uint8_t* p, size_t n) {
        uint32_t s = 0;
        for (size_t i = 0; i + 1 < n; i += 2) s += uint32_t(p[i]) << 8 | p[i + 1];
        while (s >> 16) s = (s & 0xFFFF) + (s >> 16);
        return uint16_t(~s);
    }
    static void put16(std::vector<uint8_t>& v, uint16_t x) { v.push_back(x >> 8); v.push_back(x & 255); }
    static void put32(std::vector<uint8_t>& v, uint32_t x) { put16(v, x >> 16); put16(v, x & 0xFFFF); }
    static uint16_t get16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
    static uint32_t get32(const uint8_t* p) { return uint32_t(get16(p)) << 16 | get16(p + 2); }

    bool open(uint16_t port) {
        sock = socket(AF_INET, SOCK_DGRAM, 0);
        if (sock < 0) return false;
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons(port);
        if (bind(sock, reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) return false;
        socklen_t len = sizeof a;
        getsockname(sock, reinterpret_cast<sockaddr*>(&a), &len);
        std::printf("harness-eth: udp 127.0.0.1:%u\n", unsigned(ntohs(a.sin_port)));
        std::fflush(stdout);
        return true;
    }

    // An Ethernet frame (header + payload) onto the wire: padded, FCS, preamble.
    void send_frame(const uint8_t* dst, uint16_t type, const std::vector<uint8_t>& payload) {
        std::vector<uint8_t> f(dst, dst + 6);
        f.insert(f.end(), host_mac, host_mac + 6);
        put16(f, type);
        f.insert(f.end(), payload.begin(), payload.end());
        while (f.size() < 60) f.push_back(0);
        uint32_t c = crc32(f.data(), f.size());
        for (int k = 0; k < 4; k++) f.push_back(uint8_t(c >> (8 * k)));
        std::vector<uint8_t> w(7, 0x55);
        w.push_back(0xD5);
        w.insert(w.end(), f.begin(), f.end());
        frames.push_back(std::move(w));
    }
    void send_arp(uint16_t oper, const uint8_t* tha, uint32_t tpa) {
        static const uint8_t bcast[6] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
        std::vector<uint8_t> a;
        put16(a, 1); put16(a, 0x0800); a.push_back(6); a.push_back(4); put16(a, oper);
        a.insert(a.end(), host_mac, host_mac + 6); put32(a, host_ip);
        a.insert(a.end(), tha, tha + 6); put32(a, tpa);
        send_frame(oper == 1 ? bcast : tha, 0x0806, a);
    }
    void send_udp(const std::vector<uint8_t>& data) {
        std::vector<uint8_t> p;
        uint16_t total = uint16_t(20 + 8 + data.size());
        p.push_back(0x45); p.push_back(0); put16(p, total); put16(p, 0); put16(p, 0x4000);
        p.push_back(64); p.push_back(17); put16(p, 0); put32(p, host_ip); put32(p, dev_ip);
        uint16_t s = ip_sum(p.data(), 20);
        p[10] = uint8_t(s >> 8); p[11] = uint8_t(s & 255);
        put16(p, have_peer ? ntohs(peer.sin_port) : host_port); put16(p, dev_port); put16(p, uint16_t(8 + data.size())); put16(p, 0);
        p.insert(p.end(), data.begin(), data.end());
        send_frame(dev_mac, 0x0800, p);
        n_out++;
        bytes_out += data.size();
    }

    // Datagrams waiting on the socket (call when it is readable).
    void receive(uint64_t cycle) {
        uint8_t buf[65536];
        for (;;) {
            sockaddr_in from{};
            socklen_t len = sizeof from;
            ssize_t n = recvfrom(sock, buf, sizeof buf, MSG_DONTWAIT,
                                 reinterpret_cast<sockaddr*>(&from), &len);
            if (n < 0) return;
            if (ntohl(from.sin_addr.s_addr) >> 24 != 127) continue;   // local senders only
            peer = from;
            have_peer = true;
            pending.emplace_back(buf, buf + n);
        }
        (void)cycle;
    }
    // Pending datagrams to frames once the device's MAC is known; ARP for it meanwhile
    // (again every `retry` cycles).
    void service(uint64_t cycle, uint64_t retry) {
        if (pending.empty()) return;
        if (dev_mac_known) {
            while (!pending.empty()) { send_udp(pending.front()); pending.pop_front(); }
        } else if (!arp_outstanding || cycle - arp_sent_at >= retry) {
            static const uint8_t zero[6] = {0};
            send_arp(1, zero, dev_ip);
            arp_outstanding = true;
            arp_sent_at = cycle;
        }
    }
    bool busy() const { return !frames.empty() || gap > 0 || rx_on || !pending.empty(); }

    // The next nibble to the device (at an MII rx clock falling edge).
    bool next_rx(uint8_t& data) {
        if (gap > 0) { gap--; return false; }
        if (frames.empty()) return false;
        const std::vector<uint8_t>& f = frames.front();
        uint8_t b = f[nib / 2];
        data = (nib & 1) ? b >> 4 : b & 15;
        if (++nib == 2 * f.size()) { frames.pop_front(); nib = 0; gap = 24; }
        return true;
    }
    // The device's tx pins (sampled before an MII tx clock rising edge).
    void sample_tx(bool en, uint8_t data) {
        if (en) { rx_nibbles.push_back(data & 15); rx_on = true; return; }
        if (!rx_on) return;
        rx_on = false;
        std::vector<uint8_t> b;
        for (size_t i = 0; i + 1 < rx_nibbles.size(); i += 2)
            b.push_back(uint8_t(rx_nibbles[i] | rx_nibbles[i + 1] << 4));
        bool odd = rx_nibbles.size() & 1;
        rx_nibbles.clear();
        size_t k = 0;
        while (k < b.size() && b[k] == 0x55) k++;
        if (odd || k == 0 || k >= b.size() || b[k] != 0xD5 || b.size() - k - 1 < 64) { n_bad++; return; }
        const uint8_t* f = b.data() + k + 1;
        size_t n = b.size() - k - 1;
        uint32_t fcs = uint32_t(f[n - 4]) | uint32_t(f[n - 3]) << 8 | uint32_t(f[n - 2]) << 16 |
                       uint32_t(f[n - 1]) << 24;
        if (crc32(f, n - 4) != fcs) { n_bad++; return; }
        n -= 4;
        uint16_t type = get16(f + 12);
        const uint8_t* p = f + 14;
        size_t pn = n - 14;
        if (type == 0x0806 && pn >= 28) {
            uint16_t oper = get16(p + 6);
            uint32_t spa = get32(p + 14), tpa = get32(p + 24);
            if (oper == 1 && tpa == host_ip) { n_arp_req++; send_arp(2, p + 8, spa); }
            else if (oper == 2 && spa == dev_ip) {
                n_arp_rep++;
                std::memcpy(dev_mac, p + 8, 6);
                dev_mac_known = true;
                arp_outstanding = false;
            } else n_other++;
            return;
        }
        if (type != 0x0800 || pn < 28 || (p[0] >> 4) != 4) { n_other++; return; }
        size_t ihl = size_t(p[0] & 15) * 4;
        if (ip_sum(p, ihl) != 0 || get32(p + 16) != host_ip) { n_bad++; return; }
        if (p[9] != 17) { n_other++; return; }
        const uint8_t* u = p + ihl;
        size_t ulen = get16(u + 4);
        if (ulen < 8 || ihl + ulen > pn || get16(u) != dev_port) { n_bad++; return; }
        n_in++;
        bytes_in += ulen - 8;
        if (have_peer)
            sendto(sock, u + 8, ulen - 8, 0, reinterpret_cast<const sockaddr*>(&peer), sizeof peer);
    }
    void report() const {
        std::fprintf(stderr, "harness-eth: to_device %llu from_device %llu bad_frames %llu "
                     "arp_requests %llu arp_replies %llu other %llu bytes_to_device %llu "
                     "bytes_from_device %llu\n",
                     (unsigned long long)n_out, (unsigned long long)n_in,
                     (unsigned long long)n_bad, (unsigned long long)n_arp_req,
                     (unsigned long long)n_arp_rep, (unsigned long long)n_other,
                     (unsigned long long)bytes_out, (unsigned long long)bytes_in);
    }
};
