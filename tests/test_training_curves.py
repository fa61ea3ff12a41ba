"""tools/training_curves.py: block means of a run's TensorBoard scalars, read back from real events files."""
import pytest

import training_curves as curves


def test_block_means_group_iterations_by_block():
    series = {0: 1.0, 400: 3.0, 500: 10.0, 999: 20.0, 2100: 7.0}
    assert curves.block_means(series, 500) == [(0, 2, 2.0), (500, 2, 15.0), (2000, 1, 7.0)]


def test_events_written_by_tf_summary_come_back_as_block_means(tmp_path):
    import tensorflow as tf
    from main import write_scalars  # as main.py writes them
    # two files, as a resumed run leaves them: the later one rewrites iteration 500
    for name, items in (('a', [(0, 0.5), (500, 0.25)]), ('b', [(500, 0.75), (1000, 1.0)])):
        writer = tf.summary.create_file_writer(str(tmp_path / name))
        for step, value in items:
            write_scalars(writer, {'metaval_Post-update %s, step %d' % (kind, s): value / s if kind == 'accuracy'
                                   else 2 * value for s in (1, 3) for kind in ('accuracy', 'loss')}, step)
        writer.close()
    files = curves.event_files(str(tmp_path))
    assert [f.split('/')[-2] for f in files] == ['a', 'b']
    scalars = curves.read_scalars(files)
    assert scalars['metaval_Post-update accuracy, step 1'] == pytest.approx({0: 0.5, 500: 0.75, 1000: 1.0})
    lines = curves.table(scalars, 'metaval', [1, 3], 1000)
    assert len(lines) == 3
    assert lines[1].startswith('     0-   999 (  2 values)')
    accuracies, losses = lines[1].split(')')[1].split('|')
    # block 0-999: step 1 the mean of 0.5 and 0.75, step 3 a third of it; the losses twice that mean
    assert [float(v) for v in accuracies.split()] == pytest.approx([62.5, 20.83], abs=0.01)
    assert [float(v) for v in losses.split()] == pytest.approx([1.25, 1.25])
    assert [float(v) for v in lines[2].split(')')[1].split('|')[0].split()] == pytest.approx([100.0, 33.33], abs=0.01)
    assert curves.table(scalars, 'metatrain', [1], 1000) == ['metatrain: no metatrain_Post-update accuracy, '
                                                             'step 1, metatrain_Post-update loss, step 1 in the events']


def test_a_folder_without_events_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match='no events'):
        curves.event_files(str(tmp_path))
