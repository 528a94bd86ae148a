/*
 * delay-relay: joins two network namespaces through a pair of TAP devices and forwards every Ethernet
 * frame between them after a fixed one-way delay. It exists because this kernel has no netem, and the
 * shaping tests need a realistic RTT.
 *
 * Usage: delay-relay NETNS_A TAP_A NETNS_B TAP_B DELAY_US MTU [QUEUE_MB]
 *   NETNS_* are paths such as /run/netns/nc-123-1-a. The TAP devices are created inside those
 *   namespaces (setns before TUNSETIFF), brought up with the given MTU and a long txqueuelen.
 *   Addresses are the caller's business (ip -n NS addr add ...).
 *
 * Prints "ready" on stdout once both TAPs exist. Exits on SIGTERM/SIGINT or when stdin reaches EOF, so a
 * dying parent never leaves a relay behind; the TAPs are not persistent and vanish with the process.
 *
 * One thread per direction: read frames as they come, stamp them, keep them in a FIFO, write each one
 * out when its stamp plus the delay has passed. No drops under capacity: the FIFO is large, and when it
 * is full the thread stops reading, so the sending kernel queues (txqueuelen) instead.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct frame_slot {
    int64_t arrived_ns;
    uint32_t length;
};

struct direction {
    const char *label;
    int in_fd;
    int out_fd;
    int64_t delay_ns;
    size_t slot_bytes;     /* payload capacity of one slot */
    size_t slot_count;
    struct frame_slot *slots;
    unsigned char *payload; /* slot_count * slot_bytes */
    size_t head;            /* next slot to send */
    size_t used;            /* slots waiting */
    uint64_t frames;
    uint64_t bytes;
};

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "delay-relay: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* Creates a TAP named `name` inside the namespace at `netns_path`, configured and up. */
static int open_tap_in(const char *netns_path, const char *name, int mtu) {
    int ns_fd = open(netns_path, O_RDONLY | O_CLOEXEC);
    if (ns_fd < 0) die(netns_path);
    if (setns(ns_fd, CLONE_NEWNET) < 0) die("setns");
    close(ns_fd);

    int tap_fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (tap_fd < 0) die("/dev/net/tun");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    if (ioctl(tap_fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");

    /* The control socket must be created after setns so the ioctls act in this namespace. */
    int ctl = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (ctl < 0) die("socket");
    ifr.ifr_mtu = mtu;
    if (ioctl(ctl, SIOCSIFMTU, &ifr) < 0) die("SIOCSIFMTU");
    ifr.ifr_qlen = 10000; /* queue rather than drop while the relay's FIFO is full */
    if (ioctl(ctl, SIOCSIFTXQLEN, &ifr) < 0) die("SIOCSIFTXQLEN");
    if (ioctl(ctl, SIOCGIFFLAGS, &ifr) < 0) die("SIOCGIFFLAGS");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(ctl, SIOCSIFFLAGS, &ifr) < 0) die("SIOCSIFFLAGS");
    close(ctl);

    int flags = fcntl(tap_fd, F_GETFL);
    if (flags < 0 || fcntl(tap_fd, F_SETFL, flags | O_NONBLOCK) < 0) die("O_NONBLOCK");
    return tap_fd;
}

static void send_due_frames(struct direction *d, int64_t now) {
    while (d->used > 0) {
        struct frame_slot *slot = &d->slots[d->head];
        if (slot->arrived_ns + d->delay_ns > now) return;
        /* A TAP write hands the frame to the receiving stack; it does not block. A failed write is
           a drop the kernel would also have made on a real wire, so it is not retried. */
        ssize_t written = write(d->out_fd, d->payload + d->head * d->slot_bytes, slot->length);
        if (written < 0 && errno == EAGAIN) return; /* try again on the next turn */
        d->head = (d->head + 1) % d->slot_count;
        d->used--;
    }
}

static void *forward(void *arg) {
    struct direction *d = arg;
    /* Timer slack would add up to 50 us of jitter to every wake-up. */
    prctl(PR_SET_TIMERSLACK, 1UL);
    for (;;) {
        int64_t now = now_ns();
        send_due_frames(d, now);

        /* Drain what is readable, bounded so due frames are not starved by a flood. */
        for (int burst = 0; burst < 256 && d->used < d->slot_count; burst++) {
            size_t tail = (d->head + d->used) % d->slot_count;
            ssize_t n = read(d->in_fd, d->payload + tail * d->slot_bytes, d->slot_bytes);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) break;
                die("read tap");
            }
            d->slots[tail].arrived_ns = now_ns();
            d->slots[tail].length = (uint32_t)n;
            d->used++;
            d->frames++;
            d->bytes += (uint64_t)n;
        }

        now = now_ns();
        struct timespec timeout;
        struct timespec *timeout_ptr = NULL;
        if (d->used > 0) {
            int64_t due = d->slots[d->head].arrived_ns + d->delay_ns;
            int64_t wait = due - now;
            if (wait < 0) wait = 0;
            timeout.tv_sec = wait / 1000000000LL;
            timeout.tv_nsec = wait % 1000000000LL;
            timeout_ptr = &timeout;
        }
        struct pollfd pfd = {.fd = d->in_fd, .events = d->used < d->slot_count ? POLLIN : 0};
        if (ppoll(&pfd, 1, timeout_ptr, NULL) < 0 && errno != EINTR) die("ppoll");
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s NETNS_A TAP_A NETNS_B TAP_B DELAY_US MTU [QUEUE_MB]\n", argv[0]);
        return 2;
    }
    long delay_us = strtol(argv[5], NULL, 10);
    int mtu = (int)strtol(argv[6], NULL, 10);
    long queue_mb = argc > 7 ? strtol(argv[7], NULL, 10) : 64;
    if (delay_us < 0 || mtu < 576 || mtu > 65521 || queue_mb < 1) {
        fprintf(stderr, "delay-relay: bad arguments\n");
        return 2;
    }

    int tap_a = open_tap_in(argv[1], argv[2], mtu);
    int tap_b = open_tap_in(argv[3], argv[4], mtu);

    size_t slot_bytes = (size_t)mtu + 64; /* Ethernet header plus slack; VLAN tags never appear here */
    size_t slot_count = ((size_t)queue_mb << 20) / slot_bytes;
    if (slot_count < 4096) slot_count = 4096;

    struct direction dirs[2] = {
        {.label = "a->b", .in_fd = tap_a, .out_fd = tap_b},
        {.label = "b->a", .in_fd = tap_b, .out_fd = tap_a},
    };
    pthread_t threads[2];
    for (int i = 0; i < 2; i++) {
        dirs[i].delay_ns = (int64_t)delay_us * 1000;
        dirs[i].slot_bytes = slot_bytes;
        dirs[i].slot_count = slot_count;
        dirs[i].slots = calloc(slot_count, sizeof(struct frame_slot));
        dirs[i].payload = malloc(slot_count * slot_bytes);
        if (!dirs[i].slots || !dirs[i].payload) die("malloc");
        if (pthread_create(&threads[i], NULL, forward, &dirs[i]) != 0) die("pthread_create");
    }

    printf("ready\n");
    fflush(stdout);

    /* Live exactly as long as the parent holds our stdin open. */
    char sink[64];
    for (;;) {
        ssize_t n = read(0, sink, sizeof sink);
        if (n == 0) break;
        if (n < 0 && errno != EINTR) break;
    }
    return 0;
}
