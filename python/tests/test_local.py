"""The package on its own: checksum, format, writer and reader on journal
files, with no service (``service=False`` / ``"never"``) and no Rust."""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import unittest

import helpers  # noqa: F401  (puts the package on sys.path)

import tape
from tape import format as fmt
from tape.checksum import crc32c_pure
from tape.reader import Start

MiB = 1 << 20


class Tmp(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="tape-py-unit-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def writer(self, name: str = "md", **kw) -> tape.Writer:  # type: ignore[no-untyped-def]
        kw.setdefault("page_size", MiB)
        w = tape.Writer(name, dir=self.dir, service=False, **kw)
        self.addCleanup(w.close)
        return w

    def reader(self, *names: str, start: object = "start", **kw) -> tape.Reader:  # type: ignore[no-untyped-def]
        r = tape.Reader(service="never", start=start, **kw)  # type: ignore[arg-type]
        for n in names:
            r.add_journal(self.dir, n)
        return r

    def path(self, name: str, page_no: int) -> str:
        return os.path.join(self.dir, fmt.page_file_name(name, page_no))


class Checksum(unittest.TestCase):
    def test_known_values(self) -> None:
        # The iSCSI check value, and RFC 3720 B.4 test vectors.
        self.assertEqual(crc32c_pure(b"123456789"), 0xE3069283)
        self.assertEqual(crc32c_pure(bytes(32)), 0x8A9136AA)
        self.assertEqual(crc32c_pure(b"\xff" * 32), 0x62A8AB43)
        self.assertEqual(crc32c_pure(bytes(range(32))), 0x46DD794E)
        self.assertEqual(crc32c_pure(b""), 0)

    def test_every_length_and_chaining(self) -> None:
        data = bytes((i * 37 + 11) & 0xFF for i in range(100))
        whole = crc32c_pure(data)
        for n in range(len(data) + 1):
            self.assertEqual(crc32c_pure(data[n:], crc32c_pure(data[:n])), whole, n)
        # A byte-at-a-time reference: the slice-by-8 tables agree with it.
        ref = 0xFFFFFFFF
        for b in data:
            ref ^= b
            for _ in range(8):
                ref = (ref >> 1) ^ 0x82F63B78 if ref & 1 else ref >> 1
        self.assertEqual(whole, ref ^ 0xFFFFFFFF)
        self.assertEqual(tape.crc32c(data), crc32c_pure(data))


class Format(unittest.TestCase):
    def test_page_header_round_trip_and_offsets(self) -> None:
        h = fmt.PageHeader(page_size=MiB, page_no=7, created_ns=123, max_page_size=4 * MiB)
        b = h.pack()
        self.assertEqual(len(b), 64)
        self.assertEqual(b[:8], b"TAPEJRNL")
        self.assertEqual(struct.unpack_from("<IIQQqIIQ", b, 8), (2, 64, MiB, 7, 123, 48, 0, 4 * MiB))
        self.assertEqual(b[56:], bytes(8))
        self.assertEqual(fmt.PageHeader.parse(b, "x"), h)
        self.assertEqual(h.geometry, (2, 4 * MiB))
        self.assertTrue(h.may_be_empty)
        # Version 1: bytes 48 to 63 reserved, one page size.
        v1 = fmt.PageHeader(page_size=MiB, page_no=7, created_ns=123, version=1)
        self.assertEqual(v1.pack()[48:], bytes(16))
        self.assertEqual(fmt.PageHeader.parse(v1.pack(), "x").geometry, (1, MiB))
        self.assertFalse(v1.may_be_empty)

    def test_bad_page_headers_are_refused_naming_the_file(self) -> None:
        good = fmt.PageHeader(page_size=MiB, page_no=1, created_ns=1).pack()
        cases = {
            "magic": b"NOTATAPE" + good[8:],
            "version": good[:8] + struct.pack("<I", 3) + good[12:],
            "max_page_size": good[:48] + struct.pack("<Q", 0) + good[56:],
            "page_size above max_page_size": good[:16] + struct.pack("<Q", 2 * MiB) + good[24:],
            "header_len": good[:12] + struct.pack("<I", 32) + good[16:],
            "page size": good[:16] + struct.pack("<Q", 3 * MiB) + good[24:],
            "frame_header_len": good[:40] + struct.pack("<I", 40) + good[44:],
        }
        for what, b in cases.items():
            with self.subTest(what):
                with self.assertRaises(tape.FormatError) as cm:
                    fmt.PageHeader.parse(b, "/x/md.00000001.journal")
                self.assertIn("/x/md.00000001.journal", str(cm.exception))

    def test_names_and_sizes(self) -> None:
        fmt.check_name("md.binance-BTC_USDT")
        for bad in ("", ".hidden", "a/b", "x" * 65, "é"):
            with self.assertRaises(ValueError):
                fmt.check_name(bad)
        for size in (MiB - 1, 3 * MiB, 2 << 30):
            with self.assertRaises(ValueError):
                fmt.check_page_size(size)
        self.assertEqual(fmt.max_payload(MiB), 1048456)


class WriteRead(Tmp):
    def test_round_trip_across_pages(self) -> None:
        w = self.writer(source=5)
        n = 30000  # 30000 frames of 64..80 bytes: about 2.6 MiB, 3 pages
        for i in range(n):
            seq = w.write(i % 7, b"%064d" % i + bytes(i % 17), dest=i % 3, corr=i)
            self.assertEqual(seq, i + 1)
        self.assertGreaterEqual(w.page_no, 3)
        r = self.reader("md")
        for i, f in enumerate(r):
            self.assertEqual((f.journal, f.seq, f.type, f.source, f.dest, f.corr), ("md", i + 1, i % 7, 5, i % 3, i))
            self.assertEqual(bytes(f.payload), b"%064d" % i + bytes(i % 17))
            self.assertTrue(f.payload.readonly)
            self.assertEqual(f.crc, crc32c_pure(f.payload))
        self.assertEqual(i + 1, n)

    def test_times_never_decrease_and_frames_are_aligned(self) -> None:
        w = self.writer()
        for i in range(1000):
            w.write(1, bytes(i % 13))
        r = self.reader("md")
        last = 0
        for f in r:
            self.assertGreaterEqual(f.time_ns, last)
            last = f.time_ns
        with open(self.path("md", 1), "rb") as fh:
            page = fh.read()
        off = 64
        while True:
            (ln,) = struct.unpack_from("<I", page, off)
            if ln == 0:
                break
            pad = page[off + ln : off + fmt.align8(ln)]
            self.assertEqual(pad, bytes(len(pad)), "padding is zero")
            off += fmt.align8(ln)

    def test_claim_commit_and_abandon(self) -> None:
        w = self.writer()
        c = w.claim(8)
        c.payload[:] = (42).to_bytes(8, "little")
        self.assertEqual(c.commit(2, corr=9), 1)
        big = w.claim(200)
        big.payload[:] = b"ABANDON!" * 25
        self.assertEqual(w.write(3, b"short"), 2)  # gives the claim up
        with self.assertRaises(tape.TapeError):
            big.commit(1)
        self.assertEqual(w.write(3, b"after"), 3)
        got = [(f.seq, f.type, f.corr, bytes(f.payload)) for f in self.reader("md")]
        self.assertEqual(got, [(1, 2, 9, (42).to_bytes(8, "little")), (2, 3, 0, b"short"), (3, 3, 0, b"after")])
        with open(self.path("md", 1), "rb") as fh:
            self.assertNotIn(b"ABANDON", fh.read())

    def test_a_header_field_out_of_range_writes_nothing(self) -> None:
        w = self.writer()
        with self.assertRaises(ValueError):
            w.write(1 << 32, b"A" * 100)  # the payload was copied before the header failed
        c = w.claim(50)
        c.payload[:] = b"B" * 50
        with self.assertRaises(ValueError):
            c.commit(-1)
        with self.assertRaises(ValueError):
            w.write(1, b"C" * 30, dest=1 << 32)
        self.assertEqual(w.write(2, b"y"), 1)  # its end falls where the bad payloads were
        self.assertEqual(w.write(2, b"z"), 2)
        got = [(f.seq, bytes(f.payload)) for f in self.reader("md")]
        self.assertEqual(got, [(1, b"y"), (2, b"z")])
        with open(self.path("md", 1), "rb") as fh:
            page = fh.read()
        for junk in (b"AAAA", b"BBBB", b"CCCC"):
            self.assertNotIn(junk, page)

    def test_largest_payload_and_too_large(self) -> None:
        w = self.writer()
        w.write(1, b"x")
        big = bytes(range(256)) * (fmt.max_payload(MiB) // 256) + b"z" * (fmt.max_payload(MiB) % 256)
        self.assertEqual(w.write(2, big), 2)  # fills page 2 alone
        with self.assertRaises(ValueError):
            w.write(1, bytes(fmt.max_payload(MiB) + 1))
        w.write(3, b"y")
        got = [(f.seq, bytes(f.payload)) for f in self.reader("md")]
        self.assertEqual(got, [(1, b"x"), (2, big), (3, b"y")])
        self.assertEqual(w.page_no, 3)

    def test_pages_grow_to_the_largest_and_readers_map_each_at_its_size(self) -> None:
        """FORMAT.md, "Page sizes": 1, 2, 4, 8, 8 MiB with a largest of
        8 MiB; every header says the largest; the reader reads every frame
        and seeks into each page."""
        w = self.writer(page_size=8 * MiB)
        payload = bytes(range(256)) * 200
        while w.page_no < 5:
            w.write(1, payload)
        last = w.next_seq - 1
        self.assertEqual((w.page_size, w.max_page_size), (8 * MiB, 8 * MiB))
        w.close()
        sizes = [os.path.getsize(self.path("md", n)) for n in range(1, 6)]
        self.assertEqual(sizes, [MiB, 2 * MiB, 4 * MiB, 8 * MiB, 8 * MiB])
        for n in range(1, 6):
            with open(self.path("md", n), "rb") as f:
                h = fmt.PageHeader.parse(f.read(64), "x")
            self.assertEqual((h.version, h.page_size, h.max_page_size), (2, sizes[n - 1], 8 * MiB))
        per = [(size - 72) // (48 + len(payload)) for size in sizes]
        self.assertEqual([f.seq for f in self.reader("md")], list(range(1, last + 1)))
        first = 1
        for n in range(4):
            first += per[n]
            for s in (first - 1, first, first + 1):
                if s > last:
                    continue
                with self.subTest(seq=s):
                    self.assertEqual(self.reader("md", start=Start.seq(s)).next().seq, s)  # type: ignore[union-attr]

    def test_a_frame_larger_than_the_page_made_ahead_skips_it(self) -> None:
        """Page 2, made ahead at 2 MiB, is too small for a 3 MiB frame: it
        gets its end-of-page marker at offset 64 and page 3 holds the frame
        (the smallest power of two from 4 MiB that does)."""
        w = self.writer(page_size=64 * MiB)
        small = b"s" * 1000
        while w.page_no == 1 and w._off < 600 * 1024:  # past half of page 1
            w.write(1, small)
        w.write(1, small)
        assert w._next is not None
        w._next.join()  # page 2 made ahead, at 2 MiB
        self.assertEqual(os.path.getsize(self.path("md", 2)), 2 * MiB)
        big = bytes(range(251)) * (3 * MiB // 251)
        seq = w.write(2, big)
        w.write(3, b"after")
        self.assertEqual(w.page_no, 3)
        self.assertEqual(os.path.getsize(self.path("md", 3)), 4 * MiB)
        with open(self.path("md", 2), "rb") as f:
            f.seek(64)
            self.assertEqual(f.read(4), b"\xff\xff\xff\xff")
        got = [(f.seq, f.type, bytes(f.payload)) for f in self.reader("md", verify_crc=True)]
        self.assertEqual(got[-2:], [(seq, 2, big), (seq + 1, 3, b"after")])
        self.assertEqual([g[0] for g in got], list(range(1, seq + 2)))
        self.assertEqual(self.reader("md", start=Start.seq(seq)).next().seq, seq)  # type: ignore[union-attr]
        w.close()
        # A new writer goes on after the large frame.
        w2 = self.writer(page_size=64 * MiB)
        self.assertEqual(w2.write(1, b"on"), seq + 2)
        # A marker at offset 64 of a page of the largest size is damage.
        w2.close()

    def test_a_skip_in_a_page_of_the_largest_size_is_damage(self) -> None:
        w = self.writer(page_size=MiB)  # every page is the largest
        while w.page_no < 2:
            w.write(1, b"x" * 100)
        w.close()
        with open(self.path("md", 2), "r+b") as f:
            f.seek(64)
            f.write(bytes(MiB - 64))
            f.seek(64)
            f.write(b"\xff\xff\xff\xff")
        shutil.copy(self.path("md", 2), self.path("md", 3))
        with open(self.path("md", 3), "r+b") as f:
            f.seek(24)
            f.write(struct.pack("<Q", 3))
            f.seek(64)
            f.write(bytes(4))
        with self.assertRaises(tape.FormatError) as cm:
            list(self.reader("md"))
        self.assertIn(self.path("md", 2), str(cm.exception))
        self.assertIn("largest size", str(cm.exception))

    def test_a_version_1_journal_is_read_and_continued_in_version_1(self) -> None:
        w = self.writer(page_size=MiB)
        for i in range(30000):
            w.write(1, b"%020d" % i)
        w.close()
        pages = fmt.page_numbers(self.dir, "md")
        self.assertGreaterEqual(len(pages), 3)
        for n in pages:  # as a tape before pages grew wrote them
            with open(self.path("md", n), "r+b") as f:
                f.seek(8)
                f.write(struct.pack("<I", 1))
                f.seek(48)
                f.write(bytes(16))
        self.assertEqual(sum(1 for _ in self.reader("md", verify_crc=True)), 30000)
        w = self.writer(page_size=8 * MiB)  # the journal keeps its own
        self.assertEqual(w.max_page_size, MiB)
        for i in range(30000, 60000):
            w.write(1, b"%020d" % i)
        w.close()
        for n in fmt.page_numbers(self.dir, "md"):
            with open(self.path("md", n), "rb") as f:
                h = fmt.PageHeader.parse(f.read(64), "x")
            self.assertEqual((h.version, h.page_size), (1, MiB), n)
        got = [bytes(f.payload) for f in self.reader("md")]
        self.assertEqual(got, [b"%020d" % i for i in range(60000)])
        # Another version is refused naming the file and the version.
        with open(self.path("md", 1), "r+b") as f:
            f.seek(8)
            f.write(struct.pack("<I", 3))
        with self.assertRaises(tape.FormatError) as cm:
            list(self.reader("md"))
        self.assertIn(self.path("md", 1), str(cm.exception))
        self.assertIn("format version 3", str(cm.exception))

    def test_reopen_continues_sequence_and_page_size(self) -> None:
        w = self.writer()
        for i in range(20000):
            w.write(1, b"%d" % i)
        w.close()
        w2 = self.writer(page_size=4 * MiB)  # an existing journal keeps its own
        self.assertEqual(w2.page_size, MiB)
        self.assertEqual(w2.next_seq, 20001)
        self.assertEqual(w2.write(1, b"next"), 20001)
        seqs = [f.seq for f in self.reader("md")]
        self.assertEqual(seqs, list(range(1, 20002)))

    def test_second_writer_is_refused_by_the_lock(self) -> None:
        w = self.writer()
        with self.assertRaises(tape.HeldError) as cm:
            tape.Writer("md", dir=self.dir, service=False)
        self.assertEqual(cm.exception.pid, os.getpid())
        with open(os.path.join(self.dir, "md.lock")) as fh:
            self.assertEqual(fh.read(), f"{os.getpid()}\n")
        w.close()
        self.writer()


class Recovery(Tmp):
    def test_garbage_past_the_tail_is_zeroed_and_sequence_continues(self) -> None:
        w = self.writer()
        for i in range(10):
            w.write(1, b"frame %d" % i)
        tail = w._off
        w.close()
        # What a killed writer leaves: an unpublished frame header and
        # payload (len still 0), and stray bytes further on.
        with open(self.path("md", 1), "r+b") as fh:
            fh.seek(tail + 4)
            fh.write(b"\x07" * 300)
            fh.seek(tail + 5000)
            fh.write(b"\xee" * 10)
        w2 = self.writer()
        with open(self.path("md", 1), "rb") as fh:
            fh.seek(tail)
            self.assertEqual(fh.read(), bytes(MiB - tail))
        self.assertEqual(w2.write(1, b"x"), 11)
        self.assertEqual(w2.write(1, b"y"), 12)
        self.assertEqual([bytes(f.payload) for f in self.reader("md")][-3:], [b"frame 9", b"x", b"y"])

    def test_tail_after_an_end_of_page_marker_and_spare_pages(self) -> None:
        w = self.writer()
        while w.page_no == 1:
            w.write(1, bytes(1000))
        last = w.next_seq - 1
        w.close()  # page 2 has one frame; maybe a spare page 3
        w2 = self.writer()
        self.assertEqual(w2.next_seq, last + 1)
        self.assertEqual(w2.page_no, 2)

    def test_damaged_frame_is_refused_naming_file_and_offset(self) -> None:
        w = self.writer()
        for i in range(5):
            w.write(1, b"payload %d" % i)
        w.close()
        with open(self.path("md", 1), "r+b") as fh:
            fh.seek(64 + 48)
            fh.write(b"X")  # the first payload byte: crc mismatch
        with self.assertRaises(tape.FormatError) as cm:
            self.writer()
        self.assertIn(self.path("md", 1), str(cm.exception))
        self.assertEqual(cm.exception.offset, 64)
        # The reader that asks for CRC checks sees it too; one that does not
        # reads on.
        with self.assertRaises(tape.FormatError):
            self.reader("md", verify_crc=True).next()
        self.assertEqual(len(list(self.reader("md"))), 5)

    def test_bad_len_is_damage_for_the_reader(self) -> None:
        w = self.writer()
        w.write(1, b"a")
        w.write(1, b"b")
        w.close()
        with open(self.path("md", 1), "r+b") as fh:
            fh.seek(64 + 56)
            fh.write(struct.pack("<I", 20))  # shorter than a header
        r = self.reader("md")
        self.assertEqual(bytes(r.next().payload), b"a")  # type: ignore[union-attr]
        with self.assertRaises(tape.FormatError) as cm:
            r.next()
        self.assertEqual(cm.exception.offset, 120)

    def test_missing_middle_page_is_refused(self) -> None:
        w = self.writer()
        while w.page_no < 3:
            w.write(1, bytes(5000))
        w.close()
        os.unlink(self.path("md", 2))
        with self.assertRaises(tape.FormatError):
            self.writer()


class Rules(Tmp):
    """The rules FORMAT.md settled for issue 21, as the Python writer and
    reader follow them."""

    def spare(self, no: int) -> None:
        with open(self.path("md", no), "wb") as fh:
            fh.write(fmt.PageHeader(MiB, no, 1).pack() + bytes(MiB - 64))

    def ten(self) -> int:
        w = self.writer()
        for i in range(10):
            w.write(1, b"frame %d" % i)
        tail = w._off
        w.close()
        return tail

    def test_junk_in_a_spare_page_is_zeroed_by_the_next_writer(self) -> None:
        self.ten()
        self.spare(2)
        with open(self.path("md", 2), "r+b") as fh:
            fh.seek(5000)
            fh.write(b"A" * 300)
        w = self.writer()
        with open(self.path("md", 2), "rb") as fh:
            fh.seek(64)
            self.assertEqual(fh.read(), bytes(MiB - 64))
        while w.page_no < 3:
            w.write(1, bytes(1000))
        w.close()
        self.assertEqual(len(list(self.reader("md", verify_crc=True))), w.next_seq - 1)

    def test_a_frame_past_a_hole_in_a_spare_is_refused_naming_the_tail(self) -> None:
        tail = self.ten()
        with open(self.path("md", 1), "rb") as fh:
            fh.seek(64)
            first = bytearray(fh.read(56))  # "frame 0": 55 bytes and padding
        first[8:24] = struct.pack("<Qq", 11, 1 << 62)  # the next seq, a later time
        self.spare(2)
        with open(self.path("md", 2), "r+b") as fh:
            fh.seek(4096)
            fh.write(first)
        with self.assertRaises(tape.FormatError) as cm:
            self.writer()
        self.assertIn(self.path("md", 1), str(cm.exception))
        self.assertEqual(cm.exception.offset, tail)
        self.assertIn("hole", str(cm.exception))

    def test_a_deleted_last_page_is_damage(self) -> None:
        w = self.writer()
        while w.page_no < 3:
            w.write(1, bytes(1000))
        w.close()
        for no in (3, 4):
            if os.path.exists(self.path("md", no)):
                os.unlink(self.path("md", no))
        with self.assertRaises(tape.FormatError) as cm:
            self.writer()
        self.assertIn(self.path("md", 2), str(cm.exception))
        self.assertIn("md.00000003.journal is missing", str(cm.exception))
        self.assertIn("may be lost", str(cm.exception))
        self.assertFalse(os.path.exists(self.path("md", 3)))
        with self.assertRaises(tape.FormatError) as cm:
            list(self.reader("md"))
        self.assertIn(self.path("md", 2), str(cm.exception))
        with self.assertRaises(tape.FormatError):
            self.reader("md", start="end")

    def test_a_verified_read_checks_the_time_order(self) -> None:
        self.ten()
        with open(self.path("md", 1), "r+b") as fh:
            fh.seek(64 + 5 * 56 + 16)
            fh.write(struct.pack("<q", 1))
        with self.assertRaises(tape.FormatError) as cm:
            list(self.reader("md", verify_crc=True))
        self.assertEqual(cm.exception.offset, 64 + 5 * 56)
        self.assertIn("older than the frame before", str(cm.exception))
        self.assertEqual(len(list(self.reader("md"))), 10)

    def test_the_first_sequence_number(self) -> None:
        self.ten()
        with open(self.path("md", 1), "r+b") as fh:
            for k in range(10):
                fh.seek(64 + k * 56 + 8)
                fh.write(struct.pack("<Q", k + 11))
        with self.assertRaises(tape.FormatError) as cm:
            self.writer()
        self.assertIn("first frame has sequence 11 where 1 was expected", str(cm.exception))
        self.assertEqual(cm.exception.offset, 64)
        # With page 1's flag bit 0 (a replica), it is allowed.
        with open(self.path("md", 1), "r+b") as fh:
            fh.seek(fmt.PAGE_FLAGS_OFFSET)
            fh.write(struct.pack("<I", fmt.PAGE_FLAG_FIRST_SEQ_ANY))
        w = self.writer()
        self.assertEqual(w.next_seq, 21)
        w.close()

    def test_every_page_with_frames_deleted_is_refused(self) -> None:
        self.ten()
        self.spare(2)
        os.unlink(self.path("md", 1))
        with self.assertRaises(tape.FormatError) as cm:
            self.writer()
        self.assertIn("the first page on disk is page 2 but no page has a frame", str(cm.exception))
        self.assertIn(self.path("md", 2), str(cm.exception))


class Positions(Tmp):
    def fill(self) -> tape.Writer:
        w = self.writer()
        for i in range(1, 25001):
            w.write(1, b"%080d" % i)  # 128 bytes a frame, 8191 a page: 4 pages
        return w

    def test_start_end_seq_time(self) -> None:
        w = self.fill()
        self.assertEqual(self.reader("md", start="start").next().seq, 1)  # type: ignore[union-attr]
        end = self.reader("md", start=Start.end())
        self.assertIsNone(end.next())
        w.write(1, b"new")
        self.assertEqual(end.next().seq, 25001)  # type: ignore[union-attr]
        for n in (1, 2, 7000, 8191, 8192, 8193, 16383, 16384, 20000, 25001):
            with self.subTest(seq=n):
                self.assertEqual(self.reader("md", start=Start.seq(n)).next().seq, n)  # type: ignore[union-attr]
        self.assertIsNone(self.reader("md", start=Start.seq(99999)).next())
        frames = list(self.reader("md"))
        for f in (frames[0], frames[9000], frames[-1]):
            with self.subTest(time=f.time_ns):
                g = self.reader("md", start=Start.time(f.time_ns)).next()
                assert g is not None
                self.assertEqual(g.time_ns, f.time_ns)
                self.assertLessEqual(g.seq, f.seq)
                prev = frames[g.seq - 2] if g.seq > 1 else None
                self.assertTrue(prev is None or prev.time_ns < f.time_ns)

    def test_merge_by_time_across_journals(self) -> None:
        a = self.writer("a")
        b = self.writer("b")
        order = []
        for i in range(300):
            w, n = (a, "a") if (i * 7) % 3 else (b, "b")
            w.write(1, b"%d" % i)
            order.append((n, b"%d" % i))
        r = self.reader("a", "b")
        got = [(f.journal, bytes(f.payload)) for f in r]
        times = [f.time_ns for f in self.reader("a", "b")]
        self.assertEqual(times, sorted(times))
        # Same times are possible; the multiset and per-journal order hold.
        self.assertEqual(sorted(got), sorted(order))
        self.assertEqual([p for j, p in got if j == "a"], [p for j, p in order if j == "a"])

    def test_journal_that_does_not_exist_yet_is_waited_for(self) -> None:
        r = self.reader("later", start="end")
        self.assertIsNone(r.next())
        w = self.writer("later")
        w.write(1, b"first")
        f = helpers.wait_until("the first frame of a new journal", r.next)
        self.assertEqual(bytes(f.payload), b"first")  # type: ignore[attr-defined]


if __name__ == "__main__":
    unittest.main()
