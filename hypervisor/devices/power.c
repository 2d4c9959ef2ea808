/* SPDX-License-Identifier: Apache-2.0 */
#include "power.h"
#include "bus.h"
#include "../boot/acpi.h"

#include <string.h>

#define PM1_CNT_SCI_EN 0x0001
#define PM1_CNT_SLP_TYP_SHIFT 10
#define PM1_CNT_SLP_TYP_MASK 0x1c00
#define PM1_CNT_SLP_EN 0x2000

void power_init(struct power *p, void (*event)(void *, enum power_event),
		void *opaque)
{
	memset(p, 0, sizeof(*p));
	pthread_mutex_init(&p->lock, NULL);
	p->event = event;
	p->opaque = opaque;
	/* No SMI command port: the platform starts in ACPI mode. */
	p->pm1_cnt = PM1_CNT_SCI_EN;
}

void power_destroy(struct power *p)
{
	pthread_mutex_destroy(&p->lock);
}

static void put_le(uint8_t *data, unsigned len, uint32_t v)
{
	for (unsigned i = 0; i < len; i++)
		data[i] = v >> (8 * i);
}


/* The block as bytes: 0-1 PM1 status, 2-3 PM1 enable, 4-5 PM1 control,
 * 8 reset register. */
static void acpi_read(void *opaque, uint64_t off, uint8_t *data, unsigned len)
{
	struct power *p = opaque;
	uint8_t regs[ACPI_PM_PORTS_LEN];

	memset(regs, 0, sizeof(regs));
	pthread_mutex_lock(&p->lock);
	put_le(regs + 0, 2, p->pm1_sts);
	put_le(regs + 2, 2, p->pm1_en);
	put_le(regs + 4, 2, p->pm1_cnt);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < len; i++)
		data[i] = off + i < sizeof(regs) ? regs[off + i] : 0xff;
}

static void acpi_write(void *opaque, uint64_t off, const uint8_t *data,
		       unsigned len)
{
	struct power *p = opaque;
	enum power_event ev = 0;

	pthread_mutex_lock(&p->lock);
	for (unsigned i = 0; i < len; i++) {
		unsigned reg = off + i;
		uint8_t b = data[i];
		switch (reg) {
		case 0: /* status bits are write-one-to-clear */
			p->pm1_sts &= ~b;
			break;
		case 1:
			p->pm1_sts &= ~((uint16_t)b << 8);
			break;
		case 2:
			p->pm1_en = (p->pm1_en & 0xff00) | b;
			break;
		case 3:
			p->pm1_en = (p->pm1_en & 0x00ff) | (uint16_t)b << 8;
			break;
		case 4:
			p->pm1_cnt = (p->pm1_cnt & 0xff00) | b | PM1_CNT_SCI_EN;
			break;
		case 5:
			p->pm1_cnt = (p->pm1_cnt & 0x00ff) | (uint16_t)b << 8;
			break;
		case ACPI_RESET_PORT - ACPI_PM1_EVT_PORT:
			if (b == ACPI_RESET_VALUE)
				ev = POWER_RESET;
			break;
		}
	}
	/* SLP_EN is write-only: act on it and do not keep it. */
	if (p->pm1_cnt & PM1_CNT_SLP_EN) {
		unsigned typ = (p->pm1_cnt & PM1_CNT_SLP_TYP_MASK) >> PM1_CNT_SLP_TYP_SHIFT;
		p->pm1_cnt &= ~PM1_CNT_SLP_EN;
		if (typ == ACPI_S5_SLP_TYP)
			ev = POWER_OFF;
	}
	pthread_mutex_unlock(&p->lock);
	if (ev && p->event)
		p->event(p->opaque, ev);
}

const struct bus_dev_ops power_acpi_ops = {
	.read = acpi_read,
	.write = acpi_write,
};

/* The keyboard controller: always idle (status 0: output buffer empty, input
 * buffer empty), and its pulse-reset command resets the machine. */
static void i8042_read(void *opaque, uint64_t off, uint8_t *data, unsigned len)
{
	memset(data, 0, len);
}

static void i8042_write(void *opaque, uint64_t off, const uint8_t *data,
			unsigned len)
{
	struct power *p = opaque;

	if (off == I8042_CMD_PORT - I8042_DATA_PORT && data[0] == I8042_CMD_RESET &&
	    p->event)
		p->event(p->opaque, POWER_RESET);
}

const struct bus_dev_ops power_i8042_ops = {
	.read = i8042_read,
	.write = i8042_write,
};
