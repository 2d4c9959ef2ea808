/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kvmprobe.h - whether this host's KVM can run an unmodified guest. Some
 * sandboxes offer a /dev/kvm without hardware virtualization (a
 * paravirtual KVM such as PVM, which runs only kernels built for it): a
 * stock kernel spins there in KVM_RUN with no exit, so /dev/kvm alone
 * does not say it.
 */
#ifndef OVK_KVMPROBE_H
#define OVK_KVMPROBE_H

/* 1 when /proc/cpuinfo's flags show svm or vmx, 0 when they show
   neither, -errno when cpuinfo cannot be read or has no flags line. */
int kvmprobe_cpu_virt(void);

#endif /* OVK_KVMPROBE_H */
