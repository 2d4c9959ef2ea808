/* SPDX-License-Identifier: Apache-2.0 */
#include "msix.h"

#include <errno.h>
#include <string.h>

#define MSIX_CAP_LEN 12
#define MSIX_CTRL_ENABLE 0x8000
#define MSIX_CTRL_FMASK 0x4000
#define MSIX_ENTRY_MASKED 1u

static uint32_t get_le(const uint8_t *p, unsigned len)
{
	uint32_t v = 0;
	for (unsigned i = 0; i < len; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static uint16_t ctrl(const struct msix *m)
{
	return get_le(m->dev->cfg + m->cap + 2, 2);
}

bool msix_on(const struct msix *m)
{
	return ctrl(m) & MSIX_CTRL_ENABLE;
}

bool msix_enabled(const struct msix *m)
{
	return (ctrl(m) & (MSIX_CTRL_ENABLE | MSIX_CTRL_FMASK)) ==
	       MSIX_CTRL_ENABLE;
}

int msix_init(struct msix *m, struct pci_dev *dev, unsigned nvec,
	      unsigned bar, uint64_t table_off, uint64_t pba_off,
	      const struct msix_ops *ops, void *opaque)
{
	int cap;
	uint8_t *c;

	if (nvec == 0 || nvec > MSIX_MAX_VECTORS || bar >= PCI_NUM_BARS ||
	    (table_off & 7) || (pba_off & 7) ||
	    table_off + nvec * MSIX_ENTRY_SIZE > dev->bar_size[bar] ||
	    pba_off + 8 * ((nvec + 63) / 64) > dev->bar_size[bar])
		return -EINVAL;
	cap = pci_dev_add_cap(dev, PCI_CAP_ID_MSIX, MSIX_CAP_LEN);
	if (cap < 0)
		return cap;
	memset(m, 0, sizeof(*m));
	m->dev = dev;
	m->cap = cap;
	m->nvec = nvec;
	m->bar = bar;
	m->table_off = table_off;
	m->pba_off = pba_off;
	m->ops = ops;
	m->opaque = opaque;
	c = dev->cfg + cap;
	c[2] = (nvec - 1) & 0xff;
	c[3] = (nvec - 1) >> 8;
	dev->wmask[cap + 3] = 0xc0; /* enable and function mask */
	for (unsigned i = 0; i < 4; i++) {
		c[4 + i] = (uint32_t)(table_off | bar) >> (8 * i);
		c[8 + i] = (uint32_t)(pba_off | bar) >> (8 * i);
	}
	for (unsigned v = 0; v < nvec; v++)
		m->table[v * MSIX_ENTRY_SIZE + 12] = MSIX_ENTRY_MASKED;
	return 0;
}

/* Recompute one vector's state, tell the owner, deliver what was pending. */
static void update(struct msix *m, unsigned vec)
{
	const uint8_t *e = m->table + vec * MSIX_ENTRY_SIZE;
	uint64_t addr = get_le(e, 4) | (uint64_t)get_le(e + 4, 4) << 32;
	uint32_t data = get_le(e + 8, 4);
	bool usable = msix_enabled(m) && !(e[12] & MSIX_ENTRY_MASKED);

	__atomic_store_n(&m->usable[vec], usable, __ATOMIC_SEQ_CST);
	if (m->ops && m->ops->vector_changed)
		m->ops->vector_changed(m->opaque, vec, addr, data, usable);
	if (usable && __atomic_exchange_n(&m->pending[vec], false,
					  __ATOMIC_SEQ_CST) &&
	    m->ops && m->ops->deliver)
		m->ops->deliver(m->opaque, vec);
}

void msix_config_written(struct msix *m, unsigned off, unsigned len)
{
	if (off + len <= m->cap + 2 || off >= m->cap + 4)
		return;
	for (unsigned v = 0; v < m->nvec; v++)
		update(m, v);
}

static bool in(uint64_t off, unsigned len, uint64_t start, uint64_t size)
{
	return off >= start && off - start < size && len <= size - (off - start);
}

bool msix_bar_read(struct msix *m, uint64_t off, uint8_t *data, unsigned len)
{
	uint64_t pba_len = 8 * ((m->nvec + 63) / 64);

	if (in(off, len, m->table_off, (uint64_t)m->nvec * MSIX_ENTRY_SIZE)) {
		memcpy(data, m->table + (off - m->table_off), len);
		return true;
	}
	if (in(off, len, m->pba_off, pba_len)) {
		for (unsigned i = 0; i < len; i++) {
			unsigned first = (off - m->pba_off + i) * 8;
			data[i] = 0;
			for (unsigned b = 0; b < 8 && first + b < m->nvec; b++)
				if (__atomic_load_n(&m->pending[first + b],
						    __ATOMIC_SEQ_CST))
					data[i] |= 1u << b;
		}
		return true;
	}
	return false;
}

bool msix_bar_write(struct msix *m, uint64_t off, const uint8_t *data,
		    unsigned len)
{
	uint64_t rel;
	unsigned first, last;

	if (in(off, len, m->pba_off, 8 * ((m->nvec + 63) / 64)))
		return true; /* the PBA is read-only */
	if (!in(off, len, m->table_off, (uint64_t)m->nvec * MSIX_ENTRY_SIZE))
		return false;
	rel = off - m->table_off;
	memcpy(m->table + rel, data, len);
	/* Only bit 0 of vector control is defined; the rest reads zero. */
	first = rel / MSIX_ENTRY_SIZE;
	last = (rel + len - 1) / MSIX_ENTRY_SIZE;
	for (unsigned v = first; v <= last; v++) {
		uint8_t *ctl = m->table + v * MSIX_ENTRY_SIZE + 12;
		ctl[0] &= MSIX_ENTRY_MASKED;
		ctl[1] = ctl[2] = ctl[3] = 0;
		update(m, v);
	}
	return true;
}

void msix_fire(struct msix *m, unsigned vec)
{
	if (vec >= m->nvec)
		return;
	if (__atomic_load_n(&m->usable[vec], __ATOMIC_SEQ_CST)) {
		if (m->ops && m->ops->deliver)
			m->ops->deliver(m->opaque, vec);
	} else {
		__atomic_store_n(&m->pending[vec], true, __ATOMIC_SEQ_CST);
		/* The guest may have unmasked it meanwhile (update() stores
		 * usable before it takes the pending bit). */
		if (__atomic_load_n(&m->usable[vec], __ATOMIC_SEQ_CST) &&
		    __atomic_exchange_n(&m->pending[vec], false,
					__ATOMIC_SEQ_CST) &&
		    m->ops && m->ops->deliver)
			m->ops->deliver(m->opaque, vec);
	}
}
