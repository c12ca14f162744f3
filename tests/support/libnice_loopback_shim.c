#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>

/* libnice gathers no candidate on an interface flagged loopback; a test namespace has only lo. */
int getifaddrs(struct ifaddrs **ifap) {
    static int (*real_getifaddrs)(struct ifaddrs **);
    if (!real_getifaddrs) real_getifaddrs = (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
    int rc = real_getifaddrs(ifap);
    if (rc == 0)
        for (struct ifaddrs *entry = *ifap; entry; entry = entry->ifa_next) entry->ifa_flags &= ~IFF_LOOPBACK;
    return rc;
}
