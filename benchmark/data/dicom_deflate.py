"""Deflated DICOM (Deflated Explicit VR Little Endian): the header, inflated as little as possible.

pydicom inflates the whole file into memory before reading it (a 0.5 MB file can declare
and inflate to 0.5 GB). ``deflated_header(fh)`` inflates the header in steps, checks the
declared size against ``max_megapixels``, and counts the rest of the stream (capped at the
declared pixel data plus ``_INFLATE_SLACK``) without keeping it::

    ds = deflated_header(fh)     # the header Dataset, or None for any other transfer syntax
"""

from __future__ import annotations

import io
import warnings
import zlib

from benchmark.data.decode_limits import ImageError
from benchmark.data.dicom_header import check_dicom_size, check_pixel_module

_HEADER_CAP = 64 << 20     # a deflated DICOM header (all but the pixel data) may inflate to this much
_INFLATE_SLACK = 16 << 20  # inflated bytes allowed beyond the declared pixel data (other elements)


def deflated_header(fh):
    """For a Deflated Explicit VR Little Endian file: its header (without pixel data), checked
    against the size limit while inflating as little as possible; None for any other file.

    pydicom inflates the whole file into memory before reading it (a 0.5 MB file can declare
    and inflate to 0.5 GB), so the header is inflated here in steps, and the rest of the data
    is only counted (capped at the declared pixel data plus ``_INFLATE_SLACK``).
    """
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    try:
        fh.seek(0)
        fp = fh
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if read_preamble(fp, True) is None:
                return None
            meta = _read_file_meta_info(fp)
        if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
            return None
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        buf = bytearray()
        pending = b""
        done = False

        def more(n: int) -> None:  # inflate up to n more bytes into buf
            nonlocal pending, done
            want = len(buf) + n
            while len(buf) < want and not done:
                if not pending:
                    pending = fp.read(1 << 16)
                    if not pending:
                        buf.extend(inflater.flush())
                        done = True
                        break
                buf.extend(inflater.decompress(pending, want - len(buf)))
                pending = inflater.unconsumed_tail
                if inflater.eof:
                    done = True

        step = 1 << 16
        while True:
            more(step - len(buf))
            pixel = []

            def stop(tag, vr, length):
                if int(tag) in (0x7FE00010, 0x7FE00009, 0x7FE00008):
                    pixel.append(length)
                    return True
                return False

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = read_dataset(io.BytesIO(bytes(buf)), False, True, stop_when=stop)
            except Exception:  # noqa: BLE001 - a header cut short; inflate more (or give up below)
                ds = None
            if ds is not None and (pixel or done):
                break
            if done:
                raise ImageError("unreadable deflated DICOM; the file may be truncated or not DICOM")
            if len(buf) >= _HEADER_CAP:
                raise ImageError(f"deflated DICOM whose header inflates to more than {_HEADER_CAP >> 20} MB; "
                                 "export the image again without deflate compression")
            step = min(len(buf) * 4, _HEADER_CAP)
        ds.file_meta = meta
        check_pixel_module(ds, pixels_seen=bool(pixel))
        check_dicom_size(ds)
        try:
            from pydicom.pixels.utils import get_expected_length

            expected = int(get_expected_length(ds))
        except Exception:  # noqa: BLE001 - inconsistent header; decoding will tell
            expected = 0
        cap = len(buf) + expected + _INFLATE_SLACK
        total = len(buf)
        del buf[:]
        while not done:
            n = len(buf)
            more(1 << 20)
            total += len(buf) - n
            del buf[:]
            if total > cap:
                raise ImageError(f"deflated DICOM that inflates to more than {cap >> 20} MB although its header "
                                 "declares a smaller image; export the image again")
        return ds
    except ImageError:
        raise
    except (OSError, zlib.error, ValueError, EOFError, KeyError, TypeError):
        raise ImageError("unreadable DICOM (its deflated data is malformed); the file may be truncated or not DICOM") from None
